"""The checkpoint a batch shard writes and the operator reads for progress (JSON, one per shard)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CheckpointState:
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    watermark: str | None = None
    done_above: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    completed: bool = False
    sources_total: int = 0  # source objects in this shard (files, URLs, keys)
    sources_done: int = 0

    def covers(self, doc_id: str) -> bool:
        return (self.watermark is not None and doc_id <= self.watermark) or doc_id in self.done_above

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> CheckpointState:
        return cls(**json.loads(raw))
