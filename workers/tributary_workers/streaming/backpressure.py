"""When producers hold back: the hysteresis, which watermarks are in force, and the backlog monitor
the Python producer and the gateway share.

Precedence (``watermarks_in_force``): the operator's backpressure record of the stream
(contract.backpressure, written from the StreamPipeline's ``spec.backpressure``) wins over the
producer's own flags when it exists, parses and is about the producer's consumer group; without it
(no operator, the key expired, another group) the flags apply, as they always did.

With a record, its watermarks apply, and when it is fresh its on/off state (the pipeline's
Backpressure condition) is adopted whenever it is news: when the producer first sees it, and each
time it flips. Between the operator's passes (every pollingIntervalSeconds) the producer's own,
newer backlog readings carry the same hysteresis on: held from ``backlog >= high``, released at
``backlog <= low``, the last state in between. So a `tributary publish` started while the pipeline
is Backpressured starts held, and no producer overshoots the high watermark for a polling
interval, nor stays held for one after the backlog fell to the low watermark. A stale record
(older than its TTL) lends its watermarks only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tributary_workers.contract.backpressure import BackpressureRecord, parse_backpressure
from tributary_workers.contract.keys import backpressure_key

log = logging.getLogger("tributary.backpressure")

OPERATOR, FLAGS = "operator", "flags"


class Hysteresis:
    """Throttled from backlog >= high until backlog <= low; never flaps between the two."""

    def __init__(self, high: int, low: int):
        if not 0 <= low < high:
            raise ValueError(f"watermarks need 0 <= low < high, got low={low}, high={high}")
        self.high = high
        self.low = low
        self.throttled = False

    def update(self, backlog: int) -> bool:
        self.throttled = hysteresis(self.high, self.low, backlog, self.throttled)
        return self.throttled


def hysteresis(high: int, low: int, backlog: int, was: bool) -> bool:
    if backlog >= high:
        return True
    if backlog <= low:
        return False
    return was


# --- precedence (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Watermarks:
    """The watermarks in force and where they come from; ``operator_on`` is a fresh record's state."""

    high: int
    low: int
    source: str = FLAGS  # OPERATOR or FLAGS
    pipeline: str | None = None
    operator_on: bool | None = None

    def describe(self, stream: str) -> str:
        if self.source == OPERATOR:
            return (f"backpressure of stream {stream}: following StreamPipeline {self.pipeline} "
                    f"(high watermark {self.high}, low {self.low})")
        return (f"backpressure of stream {stream}: no operator record, using the flags "
                f"(high watermark {self.high}, low {self.low})")


def watermarks_in_force(record: BackpressureRecord | None, now: float, group: str,
                        flags: Watermarks) -> Watermarks:
    if record is None or record.group != group:
        return flags
    return Watermarks(record.high, record.low, OPERATOR, record.pipeline,
                      record.on if record.fresh(now) else None)


def decide(raw: str | bytes | None, now: float, group: str, flags: Watermarks, backlog: int, was: bool,
           adopted: tuple[str, bool] | None) -> tuple[bool, Watermarks, tuple[str, bool] | None]:
    """(throttled, the watermarks in force, the operator state adopted so far) from the stored
    record (raw, None when absent), the producer's backlog reading and its previous state."""
    rule = watermarks_in_force(parse_backpressure(raw), now, group, flags)
    if rule.operator_on is not None and (rule.pipeline, rule.operator_on) != adopted:
        adopted = (rule.pipeline, rule.operator_on)
        was = rule.operator_on
    return hysteresis(rule.high, rule.low, backlog, was), rule, adopted


# --- the monitor --------------------------------------------------------------------------------


class BacklogMonitor:
    """The stream's backlog and the operator's record, read at most every refresh_s, through the
    hysteresis with the watermarks in force. Thread-safe. ``follow_operator=False``: flags only."""

    def __init__(self, stream, high: int, low: int, refresh_s: float = 0.1, *, follow_operator: bool = True):
        Hysteresis(high, low)  # the flags' check
        self.stream = stream
        self.flags = Watermarks(high, low)
        self.rule = self.flags
        self.follow_operator = follow_operator
        self.refresh_s = refresh_s
        self.throttled = False
        self.backlog = 0
        self._adopted: tuple[str, bool] | None = None
        self._measured = float("-inf")
        self._lock = threading.Lock()

    def check(self, force: bool = False) -> tuple[bool, int]:
        """(throttled, backlog)."""
        with self._lock:
            now = time.monotonic()
            if force or now - self._measured >= self.refresh_s:
                self.backlog = self.stream.backlog()
                raw = (self.stream.client.get(backpressure_key(self.stream.names.stream))
                       if self.follow_operator else None)
                self._measured = now
                self.throttled, rule, self._adopted = decide(
                    raw, time.time(), self.stream.names.group, self.flags, self.backlog, self.throttled,
                    self._adopted)
                self._follow(rule)
            return self.throttled, self.backlog

    def _follow(self, rule: Watermarks) -> None:
        """One log line when the source or the watermarks change (not the operator's on/off)."""
        previous, self.rule = self.rule, rule
        if (rule.source, rule.pipeline, rule.high, rule.low) != (
                previous.source, previous.pipeline, previous.high, previous.low):
            log.info("%s", rule.describe(self.stream.names.stream))

    def admitted(self, count: int) -> None:
        """Entries just appended count towards the backlog until the next measurement."""
        with self._lock:
            self.backlog += count
            self.throttled = hysteresis(self.rule.high, self.rule.low, self.backlog, self.throttled)


__all__ = ["FLAGS", "OPERATOR", "BacklogMonitor", "Hysteresis", "Watermarks", "decide", "hysteresis",
           "watermarks_in_force"]
