"""The version ledger in a SQLite file: the rules applied inside IMMEDIATE transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from tributary_workers.ledger.rules import (
    Decision,
    LedgerRecord,
    Provenance,
    commit_rule,
    decide_rule,
    tombstone_rule,
)


class SQLiteLedger:
    """Ledger for the embedded mode: one SQLite file, rules applied in IMMEDIATE transactions."""

    def __init__(self, path: str | Path, namespace: str):
        self.path = str(path)
        self.namespace = namespace
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS ledger (
                    namespace TEXT NOT NULL, doc_id TEXT NOT NULL, fence INTEGER NOT NULL,
                    content_hash TEXT, data_version INTEGER, deleted INTEGER NOT NULL,
                    writer TEXT NOT NULL, chunk_count INTEGER NOT NULL,
                    PRIMARY KEY (namespace, doc_id))"""
            )
            conn.execute(
                """CREATE TABLE IF NOT EXISTS provenance (
                    namespace TEXT NOT NULL, source TEXT NOT NULL, doc_id TEXT NOT NULL,
                    origin TEXT NOT NULL, version INTEGER NOT NULL,
                    PRIMARY KEY (namespace, source, doc_id))"""
            )

    def _connect(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections are not shareable across threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def _read(self, conn: sqlite3.Connection, doc_id: str) -> LedgerRecord | None:
        row = conn.execute(
            "SELECT fence, content_hash, data_version, deleted, writer, chunk_count FROM ledger"
            " WHERE namespace = ? AND doc_id = ?",
            (self.namespace, doc_id),
        ).fetchone()
        if row is None:
            return None
        return LedgerRecord(row[0], row[1], row[2], bool(row[3]), row[4], row[5])

    def _apply(self, doc_id: str, rule, *args) -> Decision:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._read(conn, doc_id)
            outcome, record = rule(current, *args)
            if record is not None and record != current:
                conn.execute(
                    "INSERT OR REPLACE INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.namespace, doc_id, record.fence, record.content_hash, record.data_version,
                        int(record.deleted), record.writer, record.chunk_count,
                    ),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Decision(outcome, record)

    def get(self, doc_id: str) -> LedgerRecord | None:
        return self._read(self._connect(), doc_id)

    def decide(self, doc_id: str, version: int, content_hash: str) -> Decision:
        return self._apply(doc_id, decide_rule, version, content_hash)

    def commit(self, doc_id: str, version: int, content_hash: str, writer: str, chunk_count: int) -> Decision:
        return self._apply(doc_id, commit_rule, version, content_hash, writer, chunk_count)

    def tombstone(self, doc_id: str, version: int, writer: str) -> Decision:
        return self._apply(doc_id, tombstone_rule, version, writer)

    def records(self) -> Iterator[tuple[str, LedgerRecord]]:
        """Every record of the namespace, by doc_id."""
        rows = self._connect().execute(
            "SELECT doc_id, fence, content_hash, data_version, deleted, writer, chunk_count FROM ledger"
            " WHERE namespace = ? ORDER BY doc_id", (self.namespace,)).fetchall()
        for row in rows:
            yield row[0], LedgerRecord(row[1], row[2], row[3], bool(row[4]), row[5], row[6])

    def delete_namespace(self) -> int:
        """Remove every record and every provenance entry of the namespace; returns the records removed."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = conn.execute("DELETE FROM ledger WHERE namespace = ?", (self.namespace,)).rowcount
            conn.execute("DELETE FROM provenance WHERE namespace = ?", (self.namespace,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return removed

    def record_provenance(self, source_id: str, entries: dict[str, Provenance]) -> None:
        if entries:
            with self._connect() as conn:
                conn.executemany("INSERT OR REPLACE INTO provenance VALUES (?, ?, ?, ?, ?)",
                                 [(self.namespace, source_id, doc_id, p.origin, p.version)
                                  for doc_id, p in entries.items()])

    def provenance(self, source_id: str) -> dict[str, Provenance]:
        rows = self._connect().execute(
            "SELECT doc_id, origin, version FROM provenance WHERE namespace = ? AND source = ?",
            (self.namespace, source_id))
        return {doc_id: Provenance(origin, version) for doc_id, origin, version in rows}

    def forget_provenance(self, source_id: str, doc_ids: list[str]) -> None:
        if doc_ids:
            with self._connect() as conn:
                conn.executemany("DELETE FROM provenance WHERE namespace = ? AND source = ? AND doc_id = ?",
                                 [(self.namespace, source_id, doc_id) for doc_id in doc_ids])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
