"""The routing record: the collections a streaming worker writes every event to.

During a re-embedding the operator makes every streamed event land in both the active and the
candidate collection, each embedded with its own model, by writing one small Redis key per index:

    tributary:routing:{index} = {"targets": [{"collection": "handbook_v1", "model": null},
                                             {"collection": "handbook_v2", "model": "/models/e5-small"}],
                                 "generation": 7}

- ``collection``  a Milvus collection (or alias); the worker creates it when missing;
- ``model``       what ``--model`` accepts: a local sentence-transformers path, or null (or the
                  default model's name) for the bundled all-MiniLM-L6-v2;
- ``generation``  increases with every change (``write_routing`` increments it atomically).

Workers read the record at every batch; with no record they write to their configured collection.
Each target has its own version-ledger namespace (its collection) and its own embedder. An event
is acknowledged only after every target accepted it.

After a worker has finished a batch it records the generation it used in the hash
``tributary:routing:{index}:applied`` (field: consumer name), also when idle; once every live
consumer reports generation G, no batch routed with an older record is still in flight.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from tributary_workers.contract.keys import applied_key, routing_key
from tributary_workers.errors import explain

MilvusName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class RoutingError(ValueError):
    """The routing record exists but is not valid; the worker does not consume until it is fixed."""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: MilvusName
    model: str | None = None


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
    """Store the record; generation None means one more than the stored one (atomic, WATCH/MULTI)."""
    key = routing_key(index)
    targets = tuple(t if isinstance(t, Target) else Target.model_validate(t) for t in targets)
    written: list[RoutingRecord] = []

    def update(pipe) -> None:
        number = generation
        if number is None:
            current = pipe.get(key)
            previous = 0
            if current is not None:
                try:
                    previous = parse_routing(current).generation
                except RoutingError:
                    previous = 0
            number = previous + 1
        record = RoutingRecord(targets=targets, generation=number)
        pipe.multi()
        pipe.set(key, record.model_dump_json())
        written[:] = [record]

    client.transaction(update, key)
    return written[0]


def clear_routing(client, index: str) -> None:
    client.delete(routing_key(index))


def report_applied(client, index: str, consumer: str, generation: int) -> None:
    client.hset(applied_key(index), consumer, generation)


def applied_generations(client, index: str) -> dict[str, int]:
    raw = client.hgetall(applied_key(index))
    decode = (lambda v: v.decode()) if raw and isinstance(next(iter(raw)), bytes) else str
    return {decode(k): int(v) for k, v in raw.items()}
