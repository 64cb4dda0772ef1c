"""The StreamPipeline scaling decision: (observation, spec, history, now) -> desired replicas.

Pure: the controller reads Redis (XINFO GROUPS / XINFO STREAM / XLEN) and the Deployment, calls
``decide`` and applies what it returns. The rules (HPA-like, see docs/streaming.md#scaling):
- backlog = the group's lag + pending; desired = clamp(ceil(backlog / targetLagPerReplica), min, max);
- up: the lowest recommendation over scaleUpStabilizationSeconds (at zero replicas: one at once);
- down: the highest recommendation over scaleDownStabilizationSeconds, at most halving per step;
- zero: only with scaleToZero, after a zero backlog (lag and pending) for the whole down window;
- an unknown backlog is never zero: estimated another way, or the replicas are held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tributary_operator.api.v1alpha1 import StreamPipelineSpec
from tributary_operator.core.conditions import EventSpec

# Samples kept at most: the windows prune by time; this bounds a pathological zig-zag.
MAX_SAMPLES = 128


@dataclass(frozen=True)
class QueueObservation:
    """What the controller saw of the pipeline's own stream and group (not every group's maximum)."""

    reachable: bool = True
    error: str = ""  # one line, when not reachable
    lag: int | None = None  # XINFO GROUPS lag: nil after XDEL / XTRIM / XSETID
    pending: int | None = None  # XINFO GROUPS pending
    entries_added: int | None = None  # XINFO STREAM entries-added
    entries_read: int | None = None  # XINFO GROUPS entries-read (nil too, at times)
    stream_length: int | None = None  # XLEN: an upper bound on the lag (safe trimming keeps undelivered)
    # Entries after last-delivered-id counted with XRANGE ... COUNT count_limit(spec); a count equal to
    # the limit means "at least that many", which is enough to decide (it already asks for max).
    counted: int | None = None


@dataclass(frozen=True)
class Backlog:
    value: int | None  # lag + pending; None: unknown
    lag: int | None
    pending: int | None
    source: str  # lag | counted | entries | length | unknown | unreachable


def count_limit(spec: StreamPipelineSpec) -> int:
    """How many entries an XRANGE fallback needs to count: one more than max replicas' worth."""
    return spec.replicas.max * spec.scaling.target_lag_per_replica + 1


def estimate_backlog(obs: QueueObservation) -> Backlog:
    """The backlog, by the most exact means the observation allows; never a guessed zero."""
    if not obs.reachable:
        return Backlog(None, None, None, "unreachable")
    pending = obs.pending or 0
    if obs.lag is not None:
        return Backlog(obs.lag + pending, obs.lag, pending, "lag")
    if obs.counted is not None:
        return Backlog(obs.counted + pending, obs.counted, pending, "counted")
    if obs.entries_added is not None and obs.entries_read is not None:
        # Counts deleted entries too (an upper bound), so it errs towards more replicas.
        lag = max(0, obs.entries_added - obs.entries_read)
        if obs.stream_length is not None:
            lag = min(lag, obs.stream_length)
        return Backlog(lag + pending, lag, pending, "entries")
    if obs.stream_length == 0:
        return Backlog(pending, 0, pending, "length")  # an empty stream has nothing undelivered
    return Backlog(None, None, pending, "unknown")


@dataclass(frozen=True)
class Sample:
    time: float
    recommendation: int


@dataclass(frozen=True)
class ScaleHistory:
    """Recent recommendations (oldest first), when observing began, since when the backlog is zero."""

    samples: tuple[Sample, ...] = ()
    since: float | None = None  # first decision of this history (an operator restart starts anew)
    zero_since: float | None = None  # backlog (lag and pending) zero without a break since then
    last_backlog: int | None = None

    def record(self, now: float, recommendation: int, backlog: int | None, keep_s: float) -> ScaleHistory:
        samples = [s for s in self.samples if s.time >= now - keep_s] + [Sample(now, recommendation)]
        zero_since = (self.zero_since if self.zero_since is not None else now) if backlog == 0 else None
        return ScaleHistory(tuple(samples[-MAX_SAMPLES:]), self.since if self.since is not None else now,
                            zero_since, backlog if backlog is not None else self.last_backlog)

    def window(self, now: float, seconds: float) -> list[int]:
        return [s.recommendation for s in self.samples if s.time >= now - seconds]


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int  # what spec.replicas of the Deployment should be (the current count when held)
    current: int
    reason: str
    message: str
    history: ScaleHistory
    backlog: Backlog
    need: int | None = None  # ceil(backlog / target) before clamping
    patch: bool = True  # False: someone else owns spec.replicas (an HPA): write nothing
    limited: bool = False  # at max with more backlog than max replicas handle

    @property
    def changed(self) -> bool:
        return self.patch and self.replicas != self.current


def _n(value: int) -> str:
    return f"{value:,}"


def decide(obs: QueueObservation, spec: StreamPipelineSpec, history: ScaleHistory, now: float, *,
           current: int, hpa: bool = False, reembedding: bool = False) -> ScaleDecision:
    """The replicas the worker Deployment should have now, why, and the history to pass next time.

    ``now`` is in seconds (any fixed origin); ``current`` the Deployment's spec.replicas; ``hpa``
    whether a HorizontalPodAutoscaler targets it; ``reembedding`` whether the pipeline's
    EmbeddingIndex has a candidate collection (then never below one replica)."""
    scaling, bounds = spec.scaling, spec.replicas
    target = scaling.target_lag_per_replica
    up_s, down_s = scaling.scale_up_stabilization_seconds, scaling.scale_down_stabilization_seconds
    keep_s = max(up_s, down_s)
    floor = 1 if reembedding or bounds.min > 0 or not scaling.scale_to_zero else 0
    backlog = estimate_backlog(obs)

    def hold(reason: str, message: str, record: bool = True) -> ScaleDecision:
        # A held count is a recommendation too: after an outage, scaling down waits a full window.
        new = history.record(now, current, None, keep_s) if record else history
        return ScaleDecision(current, current, reason, message, new, backlog, patch=not hpa)

    if hpa:
        return hold("ExternalAutoscaler", "a HorizontalPodAutoscaler targets the worker Deployment: it "
                    "owns spec.replicas, the operator does not patch them", record=False)
    if backlog.source == "unreachable":
        return hold("RedisUnavailable", f"Redis unreachable, holding {current} replicas"
                    + (f": {obs.error}" if obs.error else ""))
    if backlog.value is None:
        if current == 0 and ((obs.stream_length or 0) > 0 or reembedding):
            woke = max(1, bounds.min)
            why = "the index is re-embedding" if reembedding else (
                f"the stream holds {_n(obs.stream_length or 0)} entries")
            return ScaleDecision(woke, current, "ScaledUp", f"0→{woke}: lag unknown (Redis reports nil) and {why}",
                                 history.record(now, woke, None, keep_s), backlog)
        return hold("HoldUnknownBacklog", f"Redis reports no lag and it cannot be estimated (XLEN "
                    f"{_n(obs.stream_length or 0)} is only an upper bound): holding {current} replicas")

    need = math.ceil(backlog.value / target)
    base = min(max(need, bounds.min), bounds.max)
    history = history.record(now, base, backlog.value, keep_s)
    up = max(min(history.window(now, up_s)), bounds.min)
    down = max(history.window(now, down_s))
    if now - (history.since or now) < down_s:
        down = max(down, min(current, bounds.max))  # a fresh history does not cover the window yet
    limited = need > bounds.max
    described = f"backlog {_n(backlog.value)}" + ("" if backlog.source == "lag" else f" ({backlog.source})")

    def result(replicas: int, reason: str, message: str) -> ScaleDecision:
        return ScaleDecision(replicas, current, reason, message, history, backlog, need, limited=limited)

    if current > bounds.max:
        return result(bounds.max, "ScaledDown", f"{current}→{bounds.max}: above replicas.max")
    if current == 0 and max(base, floor if reembedding else 0) > 0:
        if base == 0:
            return result(1, "KeepOneWhileReembedding", "0→1: the index is re-embedding: one replica keeps "
                          "the backfill's live updates flowing")
        # A cold start skips the up window (as Ray Serve does): the first event must not wait for it.
        woke = max(up, 1)
        return result(woke, "ScaledUp", f"0→{woke}: {described} > 0")
    if base > current:
        if up <= current:
            return result(current, "ScaleUpStabilizing", f"{described} wants {base}, but the lowest "
                          f"recommendation over {up_s}s is {up}")
        why = f"{described} > {up - 1}×{_n(target)}" if need >= up else f"replicas.min is {bounds.min}"
        return result(up, "ScaledUp", f"{current}→{up}: {why}" + (" (capped at max)" if limited else ""))
    if down < current:
        if down == 0 and current == 1:
            zero_for = now - history.zero_since if history.zero_since is not None else 0.0
            if reembedding:
                return result(1, "KeepOneWhileReembedding", "the backlog is zero, but the index is "
                              "re-embedding: one replica keeps the backfill's live updates flowing")
            if floor == 0 and zero_for >= down_s:
                return result(0, "ScaledToZero", f"1→0: backlog zero (lag and pending) for {down_s}s")
            return result(1, "ScaleDownStabilizing", f"backlog zero for {zero_for:.0f}s of the "
                          f"{down_s}s before scaling to zero")
        step = max(down, math.ceil(current / 2), floor)
        halved = f" (at most halving per step; wants {down})" if step > down else ""
        return result(step, "ScaledDown", f"{current}→{step}: {described} ≤ {step}×{_n(target)}{halved}")
    if base < current:
        return result(current, "ScaleDownStabilizing", f"{described} wants {base}, but the highest "
                      f"recommendation over {down_s}s is {down}")
    if limited and current == bounds.max:
        return result(current, "ScalingLimited", f"{described} needs {need} replicas, replicas.max is "
                      f"{bounds.max}")
    if current == 0:
        return result(0, "Idle", "backlog zero: idle at zero replicas, woken by the first event")
    return result(current, "Steady", f"{described} fits {current}×{_n(target)}")


def scale_event(decision: ScaleDecision) -> EventSpec | None:
    """One Kubernetes Event per scale step, with its reason."""
    return EventSpec("Normal", decision.reason, decision.message) if decision.changed else None
