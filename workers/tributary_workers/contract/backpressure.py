"""The backpressure record: the operator's watermarks and Backpressure state, for the producers.

The StreamPipeline's ``spec.backpressure`` lives in Kubernetes, the producers (``tributary publish``,
the gateway) only reach Redis. So after each pass that reached Redis the operator writes one key per
stream (keys.backpressure_key)::

    tributary:backpressure:{stream} = {"high": 20, "low": 5, "on": true, "backlog": 31,
                                       "group": "workers", "pipeline": "ns/name", "at": 1718000000, "ttl": 45}

- ``high``, ``low``  the spec's watermarks (0 <= low < high);
- ``on``             the pipeline's Backpressure condition (the operator's hysteresis);
- ``backlog``        lag + pending of ``group`` when written (null: unknown); informational;
- ``group``          the consumer group whose backlog this is: producers of another group ignore it;
- ``pipeline``       ``namespace/name`` of the StreamPipeline that wrote it;
- ``at``, ``ttl``    when it was written (unix seconds) and its Redis expiry (seconds).

The key expires (``ttl_for_interval``: 3 polling intervals, at least 10 s), so a stopped operator
never throttles producers for longer than that (a deleted pipeline's record is removed at once);
the operator rewrites it when its state changes or half the TTL is spent. A record older than its ``ttl`` (a clock skew, a key
someone made persistent) is stale: its watermarks still count, its ``on`` does not.
``parse_backpressure`` is tolerant: anything invalid is None, as if there were no record (unknown
fields are ignored, so a newer operator's record still reads).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tributary_workers.contract.keys import backpressure_key

MIN_TTL_S = 10


class BackpressureRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    high: int = Field(ge=1)
    low: int = Field(ge=0)
    on: bool
    backlog: int | None = Field(None, ge=0)
    group: str
    pipeline: str
    at: float
    ttl: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> BackpressureRecord:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self

    def fresh(self, now: float) -> bool:
        """Written within its TTL (either side: the clocks of operator and producer may differ)."""
        return abs(now - self.at) <= self.ttl

    def same_state(self, other: BackpressureRecord | None) -> bool:
        """What producers act on is unchanged (the backlog and the time are not part of it)."""
        return other is not None and (self.high, self.low, self.on, self.group, self.pipeline, self.ttl) == (
            other.high, other.low, other.on, other.group, other.pipeline, other.ttl)

    def to_json(self) -> str:
        return self.model_dump_json()


def parse_backpressure(raw: str | bytes | None) -> BackpressureRecord | None:
    """The record, or None when there is none or it is not a valid one."""
    if raw is None:
        return None
    try:
        return BackpressureRecord.model_validate(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError, TypeError):
        return None


def ttl_for_interval(polling_interval_s: float) -> int:
    """The key's expiry: three of the pipeline's polling intervals, at least MIN_TTL_S."""
    return max(MIN_TTL_S, int(3 * polling_interval_s))


def read_backpressure(client, stream: str) -> BackpressureRecord | None:
    return parse_backpressure(client.get(backpressure_key(stream)))


__all__ = ["BackpressureRecord", "backpressure_key", "parse_backpressure", "read_backpressure", "ttl_for_interval"]
