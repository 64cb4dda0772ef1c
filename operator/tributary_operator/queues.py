"""What the operator reads and writes in a StreamPipeline's Redis: the group's backlog, the routing
record, the backpressure record producers follow, and consumers of pods that are gone. Plain
functions over a redis client; every Redis error becomes ``QueueObservation(reachable=False)`` or
``RedisUnavailable`` with one line, never the URL (it may hold a password).
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from tributary_workers.contract.backpressure import BackpressureRecord, parse_backpressure
from tributary_workers.contract.keys import applied_key, backpressure_key, configmap_data_key, redis_checkpoint_key
from tributary_workers.contract.routing import RoutingError, Target, all_applied, read_routing, write_routing

from tributary_operator.core.streampipeline.scaling import QueueObservation

# Short: a tick must not hang on a dead Redis (the Degraded condition says so within seconds).
TIMEOUT_S = 3.0
# A consumer is only deleted once idle this long, as well as pod-less and without pending entries:
# a consumer that is not a pod (someone's `tributary stream` sharing the group) survives brief gaps.
GONE_IDLE_MS = 10_000
REDIS_ERRORS = (redis.RedisError, OSError)

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


class RedisUnavailable(Exception):
    """Redis did not answer; the message is one line without the URL."""


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def client_for(url: str) -> redis.Redis:
    """One pooled client per URL for the operator's lifetime (each pipeline's tick reuses it)."""
    with _lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                                                 decode_responses=True)
        return _clients[url]


def _ensure_group(conn: redis.Redis, stream: str, group: str) -> None:
    # As the worker does at start: from the stream's first entry, so nothing produced before the
    # first worker ran is skipped, and the backlog is known while at zero replicas.
    try:
        conn.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def observe(conn: redis.Redis, stream: str, group: str, count_limit: int) -> QueueObservation:
    """The pipeline's own group: lag and pending (XINFO GROUPS), entries-added, XLEN, and when Redis
    reports no lag, the entries after last-delivered-id counted up to ``count_limit``."""
    try:
        _ensure_group(conn, stream, group)
        info = next((g for g in conn.xinfo_groups(stream) if g.get("name") == group), None)
        if info is None:  # deleted between the two calls: the next tick recreates it
            return QueueObservation(stream_length=conn.xlen(stream))
        stream_info = conn.xinfo_stream(stream)
        lag = info.get("lag")
        counted = None
        if lag is None:
            entries = conn.xrange(stream, min=f"({info['last-delivered-id']}", count=count_limit)
            counted = len(entries)
        return QueueObservation(
            lag=lag, pending=int(info.get("pending") or 0), entries_added=stream_info.get("entries-added"),
            entries_read=info.get("entries-read"), stream_length=int(stream_info.get("length") or 0),
            counted=counted)
    except REDIS_ERRORS as exc:
        return QueueObservation(reachable=False, error=one_line(exc))


def sync_routing(conn: redis.Redis, index: str, targets: list[dict[str, Any]]) -> tuple[int, bool]:
    """Write the routing record when its targets differ from these; (its generation, whether written)."""
    wanted = tuple(Target.model_validate(t) for t in targets)
    try:
        try:
            current = read_routing(conn, index)
        except RoutingError:
            current = None  # an invalid record is replaced: workers stop consuming until it is valid
        if current is not None and current.targets == wanted:
            return current.generation, False
        return write_routing(conn, index, list(wanted)).generation, True
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(one_line(exc)) from None


def routing_applied(conn: redis.Redis, index: str, live: set[str], generation: int) -> bool:
    """Every live worker (the pipeline's pods, Terminating ones included) reported ``generation``."""
    try:
        return all_applied(conn, index, live, generation)
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(one_line(exc)) from None


def publish_backpressure(conn: redis.Redis, stream: str, state: BackpressureRecord, ttl: int) -> bool:
    """Write the stream's backpressure record with a TTL of ``ttl`` seconds, unless the stored one
    holds the same state (watermarks, on/off, group, pipeline) and more than half its TTL is left:
    the daemon passes often, producers only need a change or a record that does not expire.
    Reading the stored record (not a memory of the last write) also covers a restarted operator
    or Redis. Returns whether it wrote."""
    key = backpressure_key(stream)
    if state.ttl != ttl:
        state = state.model_copy(update={"ttl": ttl})
    try:
        pipe = conn.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        raw, left_ms = pipe.execute()
        if state.same_state(parse_backpressure(raw)) and left_ms * 2 > ttl * 1000:
            return False
        conn.set(key, state.to_json(), ex=ttl)
        return True
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(one_line(exc)) from None


def forget_backpressure(conn: redis.Redis, stream: str, pipeline: str) -> None:
    """Delete the stream's backpressure record when it is this pipeline's (being deleted), so
    producers fall back to their flags now rather than after the TTL."""
    key = backpressure_key(stream)
    try:
        record = parse_backpressure(conn.get(key))
        if record is not None and record.pipeline == pipeline:
            conn.delete(key)
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(one_line(exc)) from None


# Atomic: a consumer is deleted only if, at that instant, it still has no pending entries (XGROUP
# DELCONSUMER drops a consumer's pending entries, which no one could then claim).
_DELETE_IDLE_CONSUMERS = """
local deleted = {}
for i, name in ipairs(ARGV) do
  if i > 2 then
    local infos = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
    for _, info in ipairs(infos) do
      local fields = {}
      for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
      if fields['name'] == name and tonumber(fields['pending']) == 0 and tonumber(fields['idle']) >= tonumber(ARGV[2]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
        table.insert(deleted, name)
      end
    end
  end
end
return deleted
"""


def delete_gone_consumers(conn: redis.Redis, stream: str, group: str, live: set[str],
                          idle_ms: int = GONE_IDLE_MS) -> list[str]:
    """Delete the group's consumers that are no pod of the pipeline (``live``: the pods' names,
    Terminating ones included), have no pending entries and have been idle ``idle_ms``.

    A gone consumer that still has pending entries stays until the remaining workers claimed them
    (XAUTOCLAIM after claimIdleMs); the next tick deletes it. Returns the names deleted."""
    try:
        gone = [c["name"] for c in conn.xinfo_consumers(stream, group) if c["name"] not in live]
        if not gone:
            return []
        return list(conn.eval(_DELETE_IDLE_CONSUMERS, 1, stream, group, idle_ms, *gone))
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(one_line(exc)) from None


def forget_applied(conn: redis.Redis, index: str, consumers: list[str]) -> None:
    """Drop deleted consumers' applied-generation reports: only those (several pipelines may feed
    one index, so the hash is never pruned to one pipeline's pods)."""
    if not consumers:
        return
    try:
        conn.hdel(applied_key(index), *consumers)
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(one_line(exc)) from None


def checkpoints(url: str, run_name: str) -> dict[str, str]:
    """The checkpoints a run's shards keep in Redis, keyed like a checkpoint ConfigMap's data."""
    conn, prefix = client_for(url), redis_checkpoint_key("")
    keys = list(conn.scan_iter(match=redis_checkpoint_key(f"{run_name}/*")))
    values = conn.mget(keys) if keys else []
    return {configmap_data_key(key.removeprefix(prefix)): value
            for key, value in zip(keys, values) if value is not None}
