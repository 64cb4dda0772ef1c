"""Batch ingest throughput against the model's own ceiling, measured in one run on one machine.

1. raw model throughput: the chunks a corpus yields, already chunked, through the embedder alone
   (same model, same batch size) - the ceiling no pipeline can beat;
2. end-to-end batch ingest: the same corpus through the batch worker (read, parse, chunk, embed,
   upsert, ledger commit) into a `milvus-lite server` over gRPC.

Prints both in chunks/s and their ratio (target >= 0.85 on CPU). Not a test: a figure to report.
Usage: python bench/ingest_throughput.py [--docs 300] [--paragraphs 8] [--batch-size 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tributary_workers.batch.worker import BatchConfig, BatchWorker  # noqa: E402
from tributary_workers.localservers import start_milvus  # noqa: E402
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig  # noqa: E402
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig  # noqa: E402
from tributary_workers.pipeline.parsers import Parser  # noqa: E402
from tributary_workers.pipeline.sources import open_source  # noqa: E402

WORDS = ("river delta sediment current estuary basin channel flood meander tributary watershed spring "
         "glacier valley canyon rapids lake wetland aquifer drought rainfall erosion bank bridge").split()


def make_corpus(root: Path, docs: int, paragraphs: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        text = []
        for p in range(paragraphs):
            words = [WORDS[(d * 7 + p * 13 + i * i) % len(WORDS)] for i in range(60)]
            text.append(f"Report {d}.{p}: " + " ".join(words) + f". Measurement {d * 1000 + p}.")
        (root / f"doc-{d:05d}.txt").write_text("\n\n".join(text))


def corpus_chunks(root: Path, chunking: ChunkerConfig, embedder: Embedder) -> list[str]:
    chunker = Chunker.for_model_path(embedder.model_path, chunking, embedder.max_seq_length)
    source, parser = open_source(str(root)), Parser()
    return [c.text for ref in source.list() for doc in parser.run(source.read(ref)).documents
            for c in chunker.run(doc)]


def raw_model(embedder: Embedder, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        embedder.run(texts[start:start + batch_size])
    return len(texts) / (time.perf_counter() - started)


def end_to_end(root: Path, uri: str, state: Path, collection: str, batch_size: int, concurrency: int) -> float:
    worker = BatchWorker(BatchConfig(
        source=str(root), collection=collection, milvus_uri=uri, ledger_url=str(state / f"{collection}.ledger"),
        checkpoint_url=str(state / f"{collection}.ckpt"), embed_batch_size=batch_size, max_concurrency=concurrency,
    ))
    worker.warm_up()
    try:
        started = time.perf_counter()
        report = worker.run()
        elapsed = time.perf_counter() - started
    finally:
        worker.close()
    assert report.documents_failed == 0, report.failures[:3]
    return report.chunks_written / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--paragraphs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds; the median is reported")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        make_corpus(corpus, args.docs, args.paragraphs)
        embedder = Embedder(EmbedderConfig(batch_size=args.batch_size, device=args.device))
        embedder.warm_up()
        texts = corpus_chunks(corpus, ChunkerConfig(), embedder)
        server = start_milvus(tmp / "milvus")
        try:
            raw, e2e = [], []
            for round_ in range(args.repeat):  # alternate, so drift in machine load hits both alike
                raw.append(raw_model(embedder, texts, args.batch_size))
                e2e.append(end_to_end(corpus, server.uri, tmp, f"bench_{round_}", args.batch_size, args.concurrency))
        finally:
            server.stop()

    import torch

    raw_cps, e2e_cps = statistics.median(raw), statistics.median(e2e)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"device {embedder.device}, python {platform.python_version()}")
    print(f"corpus: {args.docs} documents, {len(texts)} chunks (max {embedder.max_seq_length - 2} tokens), "
          f"batch size {args.batch_size}, {args.repeat} rounds")
    print(f"raw model throughput:   {raw_cps:8.1f} chunks/s   (rounds: {', '.join(f'{x:.1f}' for x in raw)})")
    print(f"end-to-end batch ingest:{e2e_cps:8.1f} chunks/s   (rounds: {', '.join(f'{x:.1f}' for x in e2e)})")
    print(f"ratio end-to-end / raw: {e2e_cps / raw_cps:8.3f}   (target >= 0.85)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
