"""Redis Streams plumbing of the streaming path: the queue, its consumer group, the dead-letter
stream, the backlog producers are throttled on, and trimming that never drops unprocessed entries.

Keys of one index (defaults; each can be set explicitly):

    tributary:stream:{index}          the event stream (one field ``event``: the event's JSON)
    tributary:stream:{index}:dead     the dead-letter stream
    consumer group ``tributary``      created at id 0 (with MKSTREAM) by whoever comes first

Backlog (what backpressure compares with its watermarks) is that of the pipeline's OWN consumer
group (``names.group``), never the largest over every group: an abandoned group (a renamed
pipeline, a one-off debugging consumer) must not throttle producers forever:

    backlog = lag + pending

``lag`` is XINFO GROUPS' ``lag`` (Redis >= 7: entries appended after the group's last-delivered-id,
i.e. never delivered to any consumer). Redis reports it as unknown (nil) when entries were deleted
with XDEL; then it is estimated without reading the stream (``lag_estimate``): entries-added −
entries-read when both are known, capped by XLEN, else XLEN (an upper bound); when that bound is
small the few entries after last-delivered-id are counted exactly with one XRANGE ``COUNT n``.
``pending`` is the group's PEL size: delivered but not yet acknowledged. A stream without that
group has backlog XLEN (nobody consumed anything yet).

Safe trimming: an entry may be removed once every group has acknowledged it. For one group the
oldest entry not yet acknowledged is the smaller of (its smallest pending id) and (the id right
after its last-delivered-id); the stream is trimmed with ``XTRIM MINID`` at the smallest of these
over all groups. MINID removes only ids strictly below it, so nothing pending or undelivered is ever
removed. Never MAXLEN. A stream without groups is not trimmed (nothing is known to be processed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tributary_workers.contract import defaults, keys

DEFAULT_GROUP = defaults.CONSUMER_GROUP
EXACT_LAG_COUNT = 256  # a nil lag whose upper bound is at most this is counted exactly (XRANGE COUNT n)
MAX_SEQ = 2**64 - 1


default_stream_key = keys.stream_key


# --- entry ids (pure) ---------------------------------------------------------------------------


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def next_id(entry_id: str | bytes) -> str:
    """The smallest id greater than entry_id."""
    ms, seq = parse_id(entry_id)
    return format_id((ms + 1, 0) if seq == MAX_SEQ else (ms, seq + 1))


def id_ms(entry_id: str | bytes) -> int:
    """The millisecond timestamp of an auto-generated id (when the entry was added)."""
    return parse_id(entry_id)[0]


@dataclass(frozen=True)
class GroupState:
    """What one consumer group has consumed; from XINFO GROUPS and XPENDING."""

    name: str
    last_delivered_id: str
    pending: int
    lag: int | None  # None: Redis could not tell (entries deleted with XDEL after last_delivered_id)
    entries_read: int | None = None
    consumers: int = 0
    pending_min_id: str | None = None

    @property
    def backlog(self) -> int:
        return (self.lag or 0) + self.pending


def oldest_unacknowledged_id(group: GroupState) -> str:
    """The first id this group may still need: its oldest pending entry or the next undelivered."""
    candidates = [next_id(group.last_delivered_id)]
    if group.pending and group.pending_min_id:
        candidates.append(group.pending_min_id)
    return min(candidates, key=parse_id)


def safe_trim_id(groups: Sequence[GroupState]) -> str | None:
    """The MINID to trim at so that no group loses an entry it has not acknowledged.

    None when there is nothing safe to trim (no group yet, or nothing acknowledged by all groups).
    """
    if not groups:
        return None
    floor = min((oldest_unacknowledged_id(g) for g in groups), key=parse_id)
    return None if parse_id(floor) <= (0, 1) else floor


def stream_backlog(groups: Sequence[GroupState], length: int, group: str) -> int:
    """The backlog producers are throttled on: lag + pending of their own group; XLEN without it.

    Other groups never count: an abandoned one would throttle the pipeline forever."""
    own = next((g for g in groups if g.name == group), None)
    return own.backlog if own is not None else length


def lag_estimate(entries_added: int | None, entries_read: int | None, length: int) -> int:
    """A group's lag when Redis reports it as nil (entries deleted with XDEL): entries-added −
    entries-read when both are known (deleted entries make it too high, so capped by XLEN), else XLEN.
    Never below 0; an upper bound either way, so backpressure errs towards throttling."""
    if entries_added is not None and entries_read is not None:
        return max(0, min(entries_added - entries_read, length))
    return max(0, length)


# --- the queue ----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class Entry:
    """One stream entry as a consumer got it."""

    id: str
    raw: dict[bytes, bytes]  # the fields exactly as stored (re-added verbatim when dead-lettered)
    deliveries: int = 1

    @property
    def fields(self) -> dict[str, bytes]:
        return {_text(k): v for k, v in self.raw.items()}


@dataclass
class DeadLetter:
    entry: Entry
    reason: str


@dataclass
class StreamNames:
    stream: str
    group: str = DEFAULT_GROUP
    dead_letter: str = ""

    def __post_init__(self):
        if not self.dead_letter:
            self.dead_letter = keys.dead_letter_key(self.stream)
        if self.dead_letter == self.stream:
            raise ValueError("the dead-letter stream must differ from the event stream")

    @classmethod
    def for_index(cls, index: str, stream: str | None = None, group: str | None = None,
                  dead_letter: str | None = None) -> StreamNames:
        return cls(stream or default_stream_key(index), group or DEFAULT_GROUP, dead_letter or "")


@dataclass
class RedisStream:
    """One event stream with its consumer group, on a client made with decode_responses=False."""

    client: Any
    names: StreamNames
    dead_letter_maxlen: int = 100_000  # approximate cap of the dead-letter stream; 0: unbounded

    @classmethod
    def from_url(cls, url: str, names: StreamNames, *, block_ms: int = 0, **kwargs) -> RedisStream:
        """block_ms: the longest XREADGROUP BLOCK this stream's reads will use (sizes the socket timeout)."""
        from tributary_workers.ledger.connect import redis_client

        return cls(redis_client(url, block_ms=block_ms), names, **kwargs)

    # -- set-up ----------------------------------------------------------------------------------

    def ensure_group(self) -> bool:
        """Create the stream and the group (at id 0: every entry is delivered) when missing."""
        import redis

        try:
            self.client.xgroup_create(self.names.stream, self.names.group, id="0", mkstream=True)
            return True
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise

    # -- producing -------------------------------------------------------------------------------

    def add(self, fields: Mapping[str, str]) -> str:
        return _text(self.client.xadd(self.names.stream, dict(fields)))

    def add_many(self, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries atomically (MULTI/EXEC): all of them, or none on error."""
        if not entries:
            return []
        pipe = self.client.pipeline(transaction=True)
        for fields in entries:
            pipe.xadd(self.names.stream, dict(fields))
        return [_text(i) for i in pipe.execute()]

    # -- consuming -------------------------------------------------------------------------------

    def read_new(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """Entries never delivered to the group (``>``); block_ms None or 0 does not block."""
        reply = self.client.xreadgroup(self.names.group, consumer, {self.names.stream: ">"}, count=count,
                                       block=block_ms or None)
        return [Entry(_text(i), raw or {}, 1) for _, items in reply or [] for i, raw in items]

    def read_own_pending(self, consumer: str, count: int, after: str = "0-0") -> list[Entry]:
        """This consumer's own pending entries after an id (e.g. after a restart under the same name)."""
        reply = self.client.xreadgroup(self.names.group, consumer, {self.names.stream: after}, count=count)
        entries = [Entry(_text(i), raw or {}) for _, items in reply or [] for i, raw in items if i is not None]
        self._fill_deliveries(entries, consumer)
        return entries

    def autoclaim(self, consumer: str, min_idle_ms: int, start: str, count: int) -> tuple[str, list[Entry]]:
        """XAUTOCLAIM: take over entries pending longer than min_idle_ms (dead or stuck consumers).

        Returns the cursor for the next call ("0-0": the scan wrapped) and the claimed entries with
        their delivery counts (XAUTOCLAIM counts this delivery).
        """
        reply = self.client.xautoclaim(self.names.stream, self.names.group, consumer, min_idle_ms,
                                       start_id=start, count=count)
        cursor, items = _text(reply[0]), reply[1]
        entries = [Entry(_text(i), raw or {}) for i, raw in items if i is not None]
        self._fill_deliveries(entries, consumer)
        return cursor, entries

    def _fill_deliveries(self, entries: list[Entry], consumer: str) -> None:
        if not entries:
            return
        ids = sorted((e.id for e in entries), key=parse_id)
        details = self.client.xpending_range(self.names.stream, self.names.group, min=ids[0], max=ids[-1],
                                             count=len(entries) * 4 + 16, consumername=consumer)
        counts = {_text(d["message_id"]): int(d["times_delivered"]) for d in details}
        for entry in entries:
            entry.deliveries = counts.get(entry.id, entry.deliveries)

    def ack(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        return int(self.client.xack(self.names.stream, self.names.group, *ids)) if ids else 0

    def settle(self, acked: Sequence[str], dead: Sequence[DeadLetter], consumer: str) -> None:
        """Dead-letter some entries and acknowledge them with the others, atomically (MULTI/EXEC).

        A dead-letter entry holds the original fields plus ``reason``, ``original_id``,
        ``deliveries``, ``consumer`` and ``dead_lettered_at`` (ns since the epoch).
        """
        if not acked and not dead:
            return
        pipe = self.client.pipeline(transaction=True)
        now = str(time.time_ns())
        for item in dead:
            fields = {**item.entry.raw, "reason": item.reason, "original_id": item.entry.id,
                      "deliveries": str(item.entry.deliveries), "consumer": consumer, "dead_lettered_at": now}
            pipe.xadd(self.names.dead_letter, fields, maxlen=self.dead_letter_maxlen or None, approximate=True)
        ids = [*acked, *(item.entry.id for item in dead)]
        pipe.xack(self.names.stream, self.names.group, *ids)
        pipe.execute()

    # -- observing -------------------------------------------------------------------------------

    def group_states(self, with_pending_min: bool = True) -> list[GroupState]:
        """Every consumer group of the stream (an empty list when the stream does not exist)."""
        import redis

        try:
            infos = self.client.xinfo_groups(self.names.stream)
        except redis.ResponseError as exc:  # "no such key"
            if "no such key" in str(exc).lower():
                return []
            raise
        states = []
        stream_info: dict | None = None
        for info in infos:
            name = _text(info.get("name"))
            last = _text(info.get("last-delivered-id")) or "0-0"
            pending = int(info.get("pending") or 0)
            lag = info.get("lag")
            entries_read = info.get("entries-read")
            entries_read = int(entries_read) if entries_read is not None else None
            if lag is not None:
                lag = int(lag)
            else:
                if stream_info is None:
                    stream_info = self.client.xinfo_stream(self.names.stream)
                lag = self._nil_lag(last, entries_read, stream_info)
            pending_min = None
            if with_pending_min and pending:
                summary = self.client.xpending(self.names.stream, name)
                pending_min = _text(summary.get("min")) or None
            states.append(GroupState(
                name=name, last_delivered_id=last, pending=pending, lag=lag, entries_read=entries_read,
                consumers=int(info.get("consumers") or 0), pending_min_id=pending_min,
            ))
        return states

    def _nil_lag(self, last_delivered_id: str, entries_read: int | None, stream_info: Mapping) -> int:
        """A lag Redis cannot tell: the upper bound of lag_estimate, counted exactly when it is small
        (one XRANGE with COUNT n; never the whole stream)."""
        added = stream_info.get("entries-added")
        bound = lag_estimate(int(added) if added is not None else None, entries_read,
                             int(stream_info.get("length") or 0))
        if bound > EXACT_LAG_COUNT:
            return bound
        items = self.client.xrange(self.names.stream, min=f"({last_delivered_id}", max="+", count=bound + 1)
        return min(len(items), bound)

    def own_pending(self, consumer: str) -> int:
        """How many entries this consumer read and has not acknowledged (0 or 1: enough to tell)."""
        return len(self.client.xpending_range(self.names.stream, self.names.group, min="-", max="+", count=1,
                                              consumername=consumer))

    def length(self) -> int:
        return int(self.client.xlen(self.names.stream))

    def backlog(self) -> int:
        """lag + pending of this stream's own group (see the module docstring); XLEN without it."""
        groups = self.group_states(with_pending_min=False)
        own = any(g.name == self.names.group for g in groups)
        return stream_backlog(groups, 0 if own else self.length(), self.names.group)

    def group_state(self) -> GroupState | None:
        for state in self.group_states():
            if state.name == self.names.group:
                return state
        return None

    def dead_letters(self, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        return [(_text(i), {_text(k): _text(v) for k, v in raw.items()})
                for i, raw in self.client.xrange(self.names.dead_letter, count=count)]

    # -- trimming --------------------------------------------------------------------------------

    def trim(self, states: Sequence[GroupState] | None = None) -> tuple[str | None, int]:
        """Remove entries every group has acknowledged (XTRIM MINID); returns (minid, removed).

        ``states`` must come from ``group_states()`` (with the pending minimums), taken now."""
        minid = safe_trim_id(self.group_states() if states is None else states)
        if minid is None:
            return None, 0
        removed = int(self.client.xtrim(self.names.stream, minid=minid, approximate=False))
        return minid, removed

    def close(self) -> None:
        self.client.close()
