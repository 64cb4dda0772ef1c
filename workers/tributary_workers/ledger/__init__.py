"""The version ledger (see rules.py): pure rules, and the SQLite and Redis stores that apply them."""

from __future__ import annotations

from tributary_workers.ledger.redis_store import RedisLedger
from tributary_workers.ledger.rules import (
    Decision,
    LedgerRecord,
    Outcome,
    Provenance,
    VersionLedger,
    commit_rule,
    decide_rule,
    tombstone_rule,
)
from tributary_workers.ledger.sqlite_store import SQLiteLedger

__all__ = [
    "Decision", "LedgerRecord", "Outcome", "Provenance", "RedisLedger", "SQLiteLedger", "VersionLedger",
    "commit_rule", "decide_rule", "open_ledger", "tombstone_rule",
]


def open_ledger(url: str, namespace: str) -> VersionLedger:
    """``redis://...`` / ``rediss://...`` -> RedisLedger; anything else is a SQLite file path."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLedger.from_url(url, namespace)
    return SQLiteLedger(url.removeprefix("sqlite://"), namespace)
