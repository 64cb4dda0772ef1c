"""Generated corpora for tests: distinct, deterministic documents of known size."""

from __future__ import annotations

import os
from pathlib import Path

TOPICS = ["rivers", "glaciers", "deserts", "forests", "mountains", "islands", "volcanoes", "caves",
          "lakes", "prairies", "reefs", "canyons"]


def paragraph(doc: int, n: int) -> str:
    topic = TOPICS[(doc + n) % len(TOPICS)]
    return (f"Document {doc} paragraph {n} describes {topic} in some detail. The {topic} of region {doc} "
            f"change with the seasons, and observers record measurement {doc * 100 + n} every spring. ")


def write_doc(root: Path, name: str, doc: int, paragraphs: int, version_ns: int | None = None) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(paragraph(doc, n) for n in range(paragraphs)))
    if version_ns is not None:
        os.utime(path, ns=(version_ns, version_ns))
    return path


def make_corpus(root: Path, count: int, paragraphs: int = 6) -> list[Path]:
    return [write_doc(root, f"doc-{i:04d}.txt", i, paragraphs) for i in range(count)]
