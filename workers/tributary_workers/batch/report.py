"""Per-document results aggregated into a run report (and shard reports into a job report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tributary_workers.pipeline.indexer import DocResult, Status

MAX_FAILURES_KEPT = 1000  # a bounded sample; the counts stay exact


@dataclass
class Report:
    documents_total: int = 0
    documents_succeeded: int = 0
    documents_failed: int = 0
    documents_unchanged: int = 0  # includes superseded: nothing to write for them
    documents_superseded: int = 0  # subset of unchanged: the index held a newer version
    chunks_written: int = 0
    documents_pruned: int = 0  # gone from the source, removed (prune)
    prune_refused: int = 0  # would have been pruned, but over prune.maxFraction
    prune_message: str = ""
    failures: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    def add(self, result: DocResult) -> None:
        self.documents_total += 1
        if result.status is Status.SUCCEEDED:
            self.documents_succeeded += 1
            self.chunks_written += result.chunks_written
        elif result.status is Status.FAILED:
            self.documents_failed += 1
            self.add_failure(result.doc_id, result.reason)
        else:
            self.documents_unchanged += 1
            if result.status is Status.SUPERSEDED:
                self.documents_superseded += 1

    def add_failure(self, doc_id: str, reason: str) -> None:
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append({"doc_id": doc_id, "reason": reason})

    def merge(self, other: Report) -> None:
        """Fold another (shard) report in; durations overlap, so the longest one counts."""
        for name in ("documents_total", "documents_succeeded", "documents_failed", "documents_unchanged",
                     "documents_superseded", "chunks_written", "documents_pruned", "prune_refused"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.prune_message = "; ".join(m for m in (self.prune_message, other.prune_message) if m)
        for failure in other.failures:
            self.add_failure(failure["doc_id"], failure["reason"])
        self.duration_s = max(self.duration_s, other.duration_s)

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_written / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every document succeeded (or had nothing to do), 3 when some failed or a prune was refused."""
        return 3 if self.documents_failed or self.prune_refused else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        data["chunks_per_second"] = round(self.chunks_per_second, 2)
        data["failures_truncated"] = self.documents_failed > len(self.failures)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        fields = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in fields})
