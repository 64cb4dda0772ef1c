"""`tributary plan`: what a batch run would do, like `terraform plan` - nothing is written.

Lists the source (documents, bytes, by type), reads and parses every document to ask the ledger
which are unchanged (a pure ``decide_rule`` on the stored record: the ledger is only read),
tokenises an evenly spread sample to learn tokens per character by type, and estimates the chunks
of the rest from their length with the chunker's window arithmetic.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tributary_workers.documents import DocumentError
from tributary_workers.ledger import Outcome, VersionLedger, decide_rule, open_ledger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import resolve_model
from tributary_workers.pipeline.parsers import Parser, ParserOptions
from tributary_workers.pipeline.sources import guess_content_type, open_source


def chunks_for_tokens(tokens: float, max_tokens: int, overlap_tokens: int) -> int:
    """Chunks the chunker cuts from a text of this many tokens: windows of max_tokens that
    overlap by overlap_tokens (cuts at word starts make windows a little shorter)."""
    if tokens <= 0:
        return 0
    if tokens <= max_tokens:
        return 1
    return 1 + math.ceil((tokens - max_tokens) / (max_tokens - overlap_tokens))


def sample_indexes(count: int, size: int) -> list[int]:
    """Up to ``size`` indexes spread evenly over range(count), first and last included."""
    if count <= size:
        return list(range(count))
    if size <= 1:
        return [0][:size]
    return sorted({round(i * (count - 1) / (size - 1)) for i in range(size)})


@dataclass(frozen=True)
class PlannerConfig:
    source: str | Sequence[str]
    collection: str
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    ledger_url: str | None = None  # None: no ledger consulted (everything would be written)
    sample_size: int = 50
    model: str | None = None
    chunking: ChunkerConfig = field(default_factory=ChunkerConfig)
    parser: ParserOptions = field(default_factory=ParserOptions)


@dataclass
class SourcePlan:
    files: int = 0
    bytes: int = 0
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> {"files", "bytes"}
    documents: int = 0  # after parsing: a JSONL file holds many
    failed: int = 0  # would fail to parse
    unchanged: int = 0
    superseded: int = 0  # the ledger holds a newer version
    to_write: int = 0
    sampled: int = 0
    chunks_to_write: float = 0.0
    chunks_sampled_exact: int = 0
    ledger: str = "none"
    failures: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "files": self.files, "bytes": self.bytes, "by_type": self.by_type, "documents": self.documents,
            "failed": self.failed, "unchanged": self.unchanged, "superseded": self.superseded,
            "to_write": self.to_write, "sampled": self.sampled, "chunks_to_write": round(self.chunks_to_write),
            "ledger": self.ledger, "failures": self.failures[:20],
        }


class Planner:
    def __init__(self, config: PlannerConfig):
        self.config = config
        self.source = open_source(config.source, include=config.include, exclude=config.exclude)
        self.parser = Parser(config.parser)
        self.chunker: Chunker | None = None
        self.ledger: VersionLedger | None = None

    def warm_up(self) -> None:
        from transformers import AutoConfig

        self.source.warm_up()
        path, _ = resolve_model(self.config.model)
        # The tokenizer and the model's length limit are enough: no weights are loaded.
        limit = _max_seq_length(path, AutoConfig)
        self.chunker = Chunker.for_model_path(path, self.config.chunking, limit)
        url = self.config.ledger_url
        if url and (url.startswith(("redis://", "rediss://", "unix://")) or Path(url).exists()):
            self.ledger = open_ledger(url, namespace=self.config.collection)
        self._ledger_label = url if self.ledger else "none"

    def run(self) -> SourcePlan:
        if self.chunker is None:
            self.warm_up()
        plan = SourcePlan(ledger=self._ledger_label)
        refs = list(self.source.list())
        sampled = set(sample_indexes(len(refs), self.config.sample_size))
        pending: list[tuple[str, int]] = []  # (type, characters) of documents to write, not sampled
        tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # type -> [tokens, characters] sampled
        for position, ref in enumerate(refs):
            kind = guess_content_type(ref.doc_id) or "unknown"
            plan.files += 1
            plan.bytes += ref.size or 0
            counts = plan.by_type.setdefault(kind, {"files": 0, "bytes": 0})
            counts["files"] += 1
            counts["bytes"] += ref.size or 0
            try:
                parsed = self.parser.run(self.source.read(ref))
            except DocumentError as exc:
                plan.failed += 1
                plan.failures.append({"doc_id": ref.doc_id, "reason": str(exc)})
                continue
            plan.failed += len(parsed.failures)
            plan.failures += [{"doc_id": d, "reason": r} for d, r in parsed.failures]
            plan.sampled += position in sampled
            for document in parsed.documents:
                plan.documents += 1
                outcome = self._outcome(document)
                chunks = None
                if position in sampled:  # tokenised whatever the ledger says: it teaches the ratio
                    try:
                        chunks = self.chunker.run(document)
                    except DocumentError as exc:
                        plan.failed += 1
                        plan.failures.append({"doc_id": document.doc_id, "reason": str(exc)})
                        continue
                    tokens[kind][0] += sum(c.token_count for c in chunks)
                    tokens[kind][1] += len(document.text)
                if outcome is Outcome.UNCHANGED:
                    plan.unchanged += 1
                elif outcome is Outcome.STALE:
                    plan.superseded += 1
                elif chunks is not None:
                    plan.to_write += 1
                    plan.chunks_sampled_exact += len(chunks)
                    plan.chunks_to_write += len(chunks)
                else:
                    plan.to_write += 1
                    pending.append((kind, len(document.text)))
        everywhere = [sum(t[0] for t in tokens.values()), sum(t[1] for t in tokens.values())]
        for kind, characters in pending:
            sampled_tokens, sampled_chars = tokens.get(kind) or everywhere
            per_char = sampled_tokens / sampled_chars if sampled_chars else 0.25  # ~4 characters a token
            plan.chunks_to_write += chunks_for_tokens(characters * per_char, self.chunker.max_tokens,
                                                      self.chunker.overlap_tokens)
        return plan

    def _outcome(self, document) -> Outcome:
        if self.ledger is None:
            return Outcome.WRITE
        outcome, _ = decide_rule(self.ledger.get(document.doc_id), document.version, document.content_hash)
        return outcome

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def _max_seq_length(path: Path, auto_config) -> int:
    """The model's sequence limit as sentence-transformers reads it, without loading weights."""
    import json

    for name in ("sentence_bert_config.json",):
        file = path / name
        if file.exists():
            value = json.loads(file.read_text()).get("max_seq_length")
            if value:
                return int(value)
    return int(auto_config.from_pretrained(str(path)).max_position_embeddings)
