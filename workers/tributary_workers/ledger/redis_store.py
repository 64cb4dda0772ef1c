"""The version ledger in Redis: the same rules as Lua scripts, run atomically on the server."""

from __future__ import annotations

import json
from collections.abc import Iterator

from tributary_workers.contract.keys import provenance_key
from tributary_workers.ledger.rules import Decision, LedgerRecord, Outcome, Provenance

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
_SCAN_COUNT = 1000  # keys per SCAN step and per pipelined read or delete


def _glob_escape(text: str) -> str:
    """text as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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
        from tributary_workers.ledger.connect import redis_client

        return cls(redis_client(url), namespace)

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
        return self._parse(self.client.hgetall(self._key(doc_id)))

    @staticmethod
    def _parse(raw: dict) -> LedgerRecord | None:
        if not raw:
            return None
        r = {_text(k): _text(v) for k, v in raw.items()}
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

    def record_provenance(self, source_id: str, entries: dict[str, Provenance]) -> None:
        if entries:
            self.client.hset(provenance_key(self.namespace, source_id),
                             mapping={doc_id: json.dumps([p.origin, str(p.version)]) for doc_id, p in entries.items()})

    def provenance(self, source_id: str) -> dict[str, Provenance]:
        found: dict[str, Provenance] = {}
        for doc_id, raw in self.client.hscan_iter(provenance_key(self.namespace, source_id), count=1000):
            origin, version = json.loads(raw)
            found[doc_id.decode() if isinstance(doc_id, bytes) else doc_id] = Provenance(origin, int(version))
        return found

    def forget_provenance(self, source_id: str, doc_ids: list[str]) -> None:
        if doc_ids:
            self.client.hdel(provenance_key(self.namespace, source_id), *doc_ids)

    def _scan(self, pattern: str) -> Iterator[list[bytes | str]]:
        """Keys matching pattern, in lists of up to _SCAN_COUNT (SCAN: never blocks the server)."""
        batch: list[bytes | str] = []
        for key in self.client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                yield batch
                batch = []
        if batch:
            yield batch

    def _record_pattern(self) -> str:
        # Only this namespace's records: provenance hashes live under another prefix
        # (tributary:provenance:{ns}:...), so they never match.
        return f"{self.key_prefix}:{{{_glob_escape(self.namespace)}}}:*"

    def records(self) -> Iterator[tuple[str, LedgerRecord]]:
        """Every record of the namespace, in no particular order (SCAN, then HGETALL pipelined)."""
        head = len(self._key(""))
        for keys in self._scan(self._record_pattern()):
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            for key, raw in zip(keys, pipe.execute(), strict=True):
                record = self._parse(raw)
                if record is not None:  # deleted between SCAN and HGETALL
                    yield _text(key)[head:], record

    def delete_namespace(self) -> int:
        """Remove every record and every provenance hash of the namespace; returns the records removed."""
        removed = 0
        for pattern, counted in ((self._record_pattern(), True),
                                 (provenance_key(_glob_escape(self.namespace), "*"), False)):
            for keys in self._scan(pattern):
                deleted = self.client.unlink(*keys)
                removed += int(deleted) if counted else 0
        return removed

    def close(self) -> None:
        self.client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
