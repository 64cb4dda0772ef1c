"""The routing record: the collections a streaming worker writes every event to.

During a re-embedding the operator makes every streamed event land in both the active and the
candidate collection, each embedded with its own model, by writing one small Redis key per index:

    tributary:routing:{index} = {"targets": [{"collection": "handbook_v1", "model": null},
                                             {"collection": "handbook_v2", "model": "/models/e5-small"}],
                                 "generation": 7}

- ``collection``  a Milvus collection, never an alias (a worker refuses an alias target: after a
                  swap it would write one model's vectors into another's collection);
- ``model``       what ``--model`` accepts: a local sentence-transformers path, or null (or the
                  default model's name) for the bundled all-MiniLM-L6-v2;
- optional, each absent (or null) meaning the worker's configured setting:
  ``max_tokens``, ``overlap_tokens`` (chunking), ``backend`` (torch|onnx), ``quantize``
  (none|int8), ``dimension`` (the vector length expected of the model, checked at warm-up);
- ``create``      (default false) whether a write may create the collection when it is missing:
                  set on the candidate of a re-embedding only. The active (first) target is never
                  created (a missing one holds consumption, like an invalid record), nor a
                  previous collection kept for rollback. Records written before this field
                  existed parse as create false: their candidate must exist already (the backfill
                  creates it) or its writes go to the repair set.
- ``generation``  increases with every change: ``write_routing`` takes it from the counter
                  ``tributary:routing:{index}:generation`` (INCR), which is never deleted, so
                  ``clear_routing`` does not make generations start again at 1.

Workers read the record at every batch; with no record they write to their configured collection.
Each target has its own version-ledger namespace (its collection) and its own embedder, and each
document its own outcome per target. The first target is the active collection (the one queries
are served from): an event is acknowledged once the active accepted it. A failure of the active
is retried, then dead-lettered, as before. A failure of a secondary target alone (the candidate
of a re-embedding, or the previous collection kept for rollback) neither holds the active's write
back nor is lost: the document's id and version go to the repair set
``tributary:routing:{index}:repair:{collection}`` (hash doc_id -> newest version), which the
operator's catch-up phase drains, and the event is acknowledged.

A worker reports a generation only once every target of it warmed up (embedder loaded, collection
reachable or created), in the hash ``tributary:routing:{index}:applied`` (field: consumer name,
value ``{"generation": G, "at": unix_seconds}``; an older plain integer is read too), after each
batch and at every maintenance tick, so ``at`` also tells the worker is alive. Once every live
consumer (``all_applied``) reports G or newer, no batch routed with an older record is in flight.
``prune_applied`` removes the reports of consumers that are gone (pass the names of the
pipeline's pods, Terminating ones included).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tributary_workers.contract.keys import applied_key, generation_key, repair_key, routing_key
from tributary_workers.errors import explain

MilvusName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class RoutingError(ValueError):
    """The routing record exists but is not valid; the worker does not consume until it is fixed."""


class Target(BaseModel):
    """One collection of the record and how its vectors are made; settings left None are the
    worker's own (its flags and environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: MilvusName
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    overlap_tokens: int | None = Field(None, ge=0)
    backend: Literal["torch", "onnx"] | None = None  # contract.defaults.BACKENDS
    quantize: Literal["none", "int8"] | None = None  # contract.defaults.QUANTIZATIONS
    dimension: int | None = Field(None, ge=1)
    create: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        if self.max_tokens is not None and self.overlap_tokens is not None and self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be less than max_tokens")
        if self.quantize == "int8" and self.backend == "torch":
            raise ValueError("quantize int8 needs backend onnx")
        return self


class RoutingRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[Target, ...] = Field(min_length=1)
    generation: int = Field(0, ge=0)

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: tuple[Target, ...]) -> tuple[Target, ...]:
        names = [t.collection for t in targets]
        if len(set(names)) != len(names):
            raise ValueError("a collection appears twice in targets")
        return targets


def parse_routing(raw: str | bytes) -> RoutingRecord:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RoutingError(f"routing record is not JSON: {exc}") from None
    try:
        return RoutingRecord.model_validate(data)
    except ValidationError as exc:
        raise RoutingError(f"invalid routing record: {explain(exc, 'invalid routing record')}") from None


def read_routing(client, index: str) -> RoutingRecord | None:
    raw = client.get(routing_key(index))
    return None if raw is None else parse_routing(raw)


def write_routing(client, index: str, targets: list[dict[str, Any] | Target],
                  generation: int | None = None) -> RoutingRecord:
    """Store the record; generation None means the next value of the index's counter (atomic,
    WATCH/MULTI over the counter and the record). An explicit generation also lifts the counter
    to it, so later automatic ones stay above it."""
    key, counter = routing_key(index), generation_key(index)
    targets = tuple(t if isinstance(t, Target) else Target.model_validate(t) for t in targets)
    written: list[RoutingRecord] = []

    def update(pipe) -> None:
        stored = _int_or_zero(pipe.get(counter))
        current = pipe.get(key)
        if current is not None:  # a record written before the counter existed
            try:
                stored = max(stored, parse_routing(current).generation)
            except RoutingError:
                pass
        number = stored + 1 if generation is None else generation
        record = RoutingRecord(targets=targets, generation=number)
        pipe.multi()
        # Unset settings are left out: a record without the newer fields reads as before, so
        # workers that predate them (extra="forbid") keep parsing it.
        pipe.set(key, record.model_dump_json(exclude_defaults=True))
        pipe.set(counter, max(stored, number))
        written[:] = [record]

    client.transaction(update, key, counter)
    return written[0]


def _int_or_zero(raw) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def clear_routing(client, index: str) -> None:
    """Workers go back to their configured collection; the generation counter stays."""
    client.delete(routing_key(index))


# --- applied generations --------------------------------------------------------------------------


class Applied(BaseModel):
    model_config = ConfigDict(frozen=True)

    generation: int
    at: float | None = None  # unix seconds of the report; None for the old plain-integer form


def parse_applied(raw: str | bytes) -> Applied | None:
    """An :applied value: {"generation": G, "at": T}, or a plain integer (older workers); None
    when unparsable (the consumer then counts as not having applied anything)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return None
    if isinstance(data, bool):
        return None
    if isinstance(data, int):
        return Applied(generation=data) if data >= 0 else None
    if isinstance(data, dict):
        try:
            applied = Applied.model_validate(data)
        except ValidationError:
            return None
        return applied if applied.generation >= 0 else None
    return None


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def report_applied(client, index: str, consumer: str, generation: int, at: float | None = None) -> None:
    value = json.dumps({"generation": generation, "at": time.time() if at is None else at})
    client.hset(applied_key(index), consumer, value)


def applied_reports(client, index: str) -> dict[str, Applied]:
    """Every parsable report, by consumer."""
    reports = {_decode(k): parse_applied(v) for k, v in client.hgetall(applied_key(index)).items()}
    return {name: report for name, report in reports.items() if report is not None}


def applied_generations(client, index: str) -> dict[str, int]:
    return {name: report.generation for name, report in applied_reports(client, index).items()}


def prune_applied(client, index: str, live: set[str]) -> list[str]:
    """Remove the reports of consumers not in live; returns their names."""
    gone = sorted(name for name in map(_decode, client.hkeys(applied_key(index))) if name not in live)
    if gone:
        client.hdel(applied_key(index), *gone)
    return gone


def all_applied(client, index: str, live: set[str], generation: int) -> bool:
    """Whether every live consumer reported generation or newer (an empty live set: nothing can
    be in flight, so True)."""
    reports = applied_generations(client, index)
    return all(reports.get(name, -1) >= generation for name in live)


# --- repair sets ------------------------------------------------------------------------------------

# HSET doc_id version unless a newer version is recorded already.
_RECORD_REPAIRS = """
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or tonumber(current) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


def record_repairs(client, index: str, collection: str, versions: dict[str, int]) -> None:
    """Documents a secondary target failed to write, each at its newest version."""
    if versions:
        args = [part for doc_id, version in versions.items() for part in (doc_id, int(version))]
        client.eval(_RECORD_REPAIRS, 1, repair_key(index, collection), *args)


def repairs(client, index: str, collection: str) -> dict[str, int]:
    return {_decode(k): int(v) for k, v in client.hgetall(repair_key(index, collection)).items()}


# HDEL doc_id only while it still holds the version the caller repaired (a newer failure stays).
_RESOLVE_REPAIRS = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return removed
"""


def resolve_repairs(client, index: str, collection: str, versions: dict[str, int]) -> int:
    """Remove repair entries that still hold these versions (compare-and-delete); returns how many."""
    if not versions:
        return 0
    args = [part for doc_id, version in versions.items() for part in (doc_id, str(int(version)))]
    return int(client.eval(_RESOLVE_REPAIRS, 1, repair_key(index, collection), *args))
