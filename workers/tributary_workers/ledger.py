"""The version ledger: the consistency rule of the whole product.

One record per (collection, doc_id) fences every write on the document's version, so batch and
stream writers can race on the same document in any order and the document still ends at its
highest version:

- ``fence``        the highest version ever accepted (an upsert or a delete);
- ``content_hash`` hash of the content at ``fence`` (None for a tombstone);
- ``data_version`` the version whose chunk rows are live in Milvus (None for a tombstone); it can
                   lag ``fence`` when a newer version arrived with unchanged content, which moves the
                   fence without rewriting any rows;
- ``deleted``      a versioned tombstone: an upsert at or below ``fence`` can never resurrect it;
- ``writer`` / ``chunk_count``  who committed it and how many chunks, so a resumed batch run can
                   count its own pre-crash commits as succeeded rather than unchanged.

Protocol for one upsert of (doc, v, hash) — writes are lock-free because chunk primary keys include
the version, so writers of different versions never overwrite each other's rows:
    1. ``decide``  -> WRITE | UNCHANGED | STALE (UNCHANGED may advance the fence atomically).
    2. WRITE: upsert the version-v rows into Milvus.
    3. ``commit``  -> COMMITTED (or ALREADY on a retry): delete the doc's rows with version < v.
                   -> STALE (a newer version won meanwhile): delete our own version-v rows,
                      unless the record says version v is the live one.
Delete of (doc, v): ``tombstone`` -> COMMITTED: delete the doc's rows with version <= v.

The rules are pure functions (``decide_rule``, ``commit_rule``, ``tombstone_rule``) so they are
unit-tested without a store; SQLite applies them inside an IMMEDIATE transaction and Redis runs
the same rules as Lua scripts, atomically on the server.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Outcome(str, enum.Enum):
    WRITE = "write"
    UNCHANGED = "unchanged"
    STALE = "stale"
    COMMITTED = "committed"
    ALREADY = "already"


@dataclass(frozen=True)
class LedgerRecord:
    fence: int
    content_hash: str | None
    data_version: int | None
    deleted: bool
    writer: str = ""
    chunk_count: int = 0


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    record: LedgerRecord | None  # the record after the operation (None: the document is unknown)


# --- pure rules ---------------------------------------------------------------------------------


def decide_rule(current: LedgerRecord | None, version: int, content_hash: str) -> tuple[Outcome, LedgerRecord | None]:
    """Before embedding: is there anything to write? Returns the outcome and the record to store."""
    if current is None:
        return Outcome.WRITE, None
    if current.fence > version:
        return Outcome.STALE, current
    if current.fence == version:
        if not current.deleted and current.content_hash == content_hash:
            return Outcome.UNCHANGED, current
        # The same version with other content (or a tombstone at this version): first one wins.
        return Outcome.STALE, current
    if not current.deleted and current.content_hash == content_hash:
        # Newer version, same content: move the fence so an older write can't sneak in later,
        # and keep the live rows as they are (data_version stays).
        return Outcome.UNCHANGED, dataclasses.replace(current, fence=version)
    return Outcome.WRITE, current


def commit_rule(
    current: LedgerRecord | None, version: int, content_hash: str, writer: str, chunk_count: int
) -> tuple[Outcome, LedgerRecord | None]:
    """After the version-v rows are written: make them the live version, unless a newer one won."""
    if current is not None:
        if (
            current.fence == version
            and current.data_version == version
            and current.content_hash == content_hash
            and not current.deleted
        ):
            return Outcome.ALREADY, current
        if current.fence >= version:
            return Outcome.STALE, current
    record = LedgerRecord(
        fence=version,
        content_hash=content_hash,
        data_version=version,
        deleted=False,
        writer=writer,
        chunk_count=chunk_count,
    )
    return Outcome.COMMITTED, record


def tombstone_rule(current: LedgerRecord | None, version: int, writer: str) -> tuple[Outcome, LedgerRecord | None]:
    """A versioned delete: only newer than everything seen so far takes effect."""
    if current is not None:
        if current.fence == version and current.deleted:
            return Outcome.ALREADY, current
        if current.fence >= version:
            return Outcome.STALE, current
    record = LedgerRecord(fence=version, content_hash=None, data_version=None, deleted=True, writer=writer)
    return Outcome.COMMITTED, record


# --- stores -------------------------------------------------------------------------------------


class VersionLedger(Protocol):
    """Atomic per-document operations; ``namespace`` is the collection the fence applies to."""

    def get(self, doc_id: str) -> LedgerRecord | None: ...

    def decide(self, doc_id: str, version: int, content_hash: str) -> Decision: ...

    def commit(self, doc_id: str, version: int, content_hash: str, writer: str, chunk_count: int) -> Decision: ...

    def tombstone(self, doc_id: str, version: int, writer: str) -> Decision: ...

    def close(self) -> None: ...


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

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# The Lua scripts below are the same rules as decide_rule / commit_rule / tombstone_rule, run
# atomically by Redis. A record is one hash; the reply is {outcome, record-as-JSON or false}.
# Versions are nanosecond timestamps (~1.7e18), beyond the 2^53 a Lua number holds exactly, so they
# travel and compare as zero-padded 20-digit strings (equal-width digit strings order like numbers).
# Keep the scripts in step with the Python rules: tests/integration/test_ledger.py runs one
# contract suite against both stores.
_LUA_COMMON = """
local function read(key)
  local h = redis.call('HGETALL', key)
  if #h == 0 then return nil end
  local r = {}
  for i = 1, #h, 2 do r[h[i]] = h[i + 1] end
  return {
    fence = r.fence, content_hash = r.content_hash or false, data_version = r.data_version or false,
    deleted = r.deleted == '1', writer = r.writer or '', chunk_count = tonumber(r.chunk_count or '0')
  }
end
local function write(key, rec)
  redis.call('DEL', key)
  local args = {'fence', rec.fence, 'deleted', rec.deleted and '1' or '0',
                'writer', rec.writer, 'chunk_count', rec.chunk_count}
  if rec.content_hash then table.insert(args, 'content_hash'); table.insert(args, rec.content_hash) end
  if rec.data_version then table.insert(args, 'data_version'); table.insert(args, rec.data_version) end
  redis.call('HSET', key, unpack(args))
end
local function reply(outcome, rec)
  if rec == nil then return {outcome, false} end
  return {outcome, cjson.encode(rec)}
end
"""

_LUA_DECIDE = _LUA_COMMON + """
local cur = read(KEYS[1])
local v = ARGV[1]; local h = ARGV[2]
if cur == nil then return reply('write', nil) end
if cur.fence > v then return reply('stale', cur) end
if cur.fence == v then
  if (not cur.deleted) and cur.content_hash == h then return reply('unchanged', cur) end
  return reply('stale', cur)
end
if (not cur.deleted) and cur.content_hash == h then
  cur.fence = v; write(KEYS[1], cur); return reply('unchanged', cur)
end
return reply('write', cur)
"""

_LUA_COMMIT = _LUA_COMMON + """
local cur = read(KEYS[1])
local v = ARGV[1]; local h = ARGV[2]
if cur ~= nil then
  if cur.fence == v and cur.data_version == v and cur.content_hash == h and not cur.deleted then
    return reply('already', cur)
  end
  if cur.fence >= v then return reply('stale', cur) end
end
local rec = {fence = v, content_hash = h, data_version = v, deleted = false,
             writer = ARGV[3], chunk_count = tonumber(ARGV[4])}
write(KEYS[1], rec)
return reply('committed', rec)
"""

_LUA_TOMBSTONE = _LUA_COMMON + """
local cur = read(KEYS[1])
local v = ARGV[1]
if cur ~= nil then
  if cur.fence == v and cur.deleted then return reply('already', cur) end
  if cur.fence >= v then return reply('stale', cur) end
end
local rec = {fence = v, content_hash = false, data_version = false, deleted = true,
             writer = ARGV[2], chunk_count = 0}
write(KEYS[1], rec)
return reply('committed', rec)
"""

_VERSION_WIDTH = 20  # digits of 2**64 - 1


def _pad(version: int) -> str:
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    return str(version).zfill(_VERSION_WIDTH)


class RedisLedger:
    """Ledger for clusters: every rule runs as one Lua script, atomic across all workers."""

    def __init__(self, client, namespace: str, key_prefix: str = "tributary:ledger"):
        self.client = client
        self.namespace = namespace
        self.key_prefix = key_prefix
        self._decide = client.register_script(_LUA_DECIDE)
        self._commit = client.register_script(_LUA_COMMIT)
        self._tombstone = client.register_script(_LUA_TOMBSTONE)

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisLedger:
        import redis

        return cls(redis.Redis.from_url(url), namespace)

    def _key(self, doc_id: str) -> str:
        # The {namespace} hash tag keeps one collection's records in one Redis Cluster slot.
        return f"{self.key_prefix}:{{{self.namespace}}}:{doc_id}"

    @staticmethod
    def _decode(reply) -> Decision:
        outcome, payload = reply
        outcome = Outcome(outcome.decode() if isinstance(outcome, bytes) else outcome)
        if not payload:
            return Decision(outcome, None)
        raw = json.loads(payload)
        record = LedgerRecord(
            fence=int(raw["fence"]),
            content_hash=raw["content_hash"] or None,
            data_version=int(raw["data_version"]) if raw["data_version"] else None,
            deleted=bool(raw["deleted"]),
            writer=raw["writer"],
            chunk_count=int(raw["chunk_count"]),
        )
        return Decision(outcome, record)

    def get(self, doc_id: str) -> LedgerRecord | None:
        raw = self.client.hgetall(self._key(doc_id))
        if not raw:
            return None
        r = {k.decode(): v.decode() for k, v in raw.items()}
        return LedgerRecord(
            fence=int(r["fence"]),
            content_hash=r.get("content_hash"),
            data_version=int(r["data_version"]) if "data_version" in r else None,
            deleted=r["deleted"] == "1",
            writer=r.get("writer", ""),
            chunk_count=int(r.get("chunk_count", 0)),
        )

    def decide(self, doc_id: str, version: int, content_hash: str) -> Decision:
        return self._decode(self._decide(keys=[self._key(doc_id)], args=[_pad(version), content_hash]))

    def commit(self, doc_id: str, version: int, content_hash: str, writer: str, chunk_count: int) -> Decision:
        return self._decode(
            self._commit(keys=[self._key(doc_id)], args=[_pad(version), content_hash, writer, chunk_count])
        )

    def tombstone(self, doc_id: str, version: int, writer: str) -> Decision:
        return self._decode(self._tombstone(keys=[self._key(doc_id)], args=[_pad(version), writer]))

    def close(self) -> None:
        self.client.close()


def open_ledger(url: str, namespace: str) -> VersionLedger:
    """``redis://...`` / ``rediss://...`` -> RedisLedger; anything else is a SQLite file path."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLedger.from_url(url, namespace)
    return SQLiteLedger(url.removeprefix("sqlite://"), namespace)
