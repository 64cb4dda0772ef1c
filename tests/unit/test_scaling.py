"""The StreamPipeline scaling decision and status, table-driven: no Redis, no cluster."""

from __future__ import annotations

import pytest
from tributary_operator.api.v1alpha1 import Scaling, StreamPipelineSpec
from tributary_operator.core.conditions import merge_conditions
from tributary_operator.core.streampipeline.scaling import (
    MAX_SAMPLES,
    QueueObservation,
    Sample,
    ScaleHistory,
    count_limit,
    decide,
    estimate_backlog,
    scale_event,
)
from tributary_operator.core.streampipeline.status import backpressure_on, stream_status


def spec(min=1, max=4, target=500, up=0, down=300, zero=False, high=10_000, low=5_000) -> StreamPipelineSpec:
    return StreamPipelineSpec.model_validate({
        "indexRef": {"name": "handbook"},
        "queue": {"redisSecretRef": {"name": "redis"}, "stream": "s"},
        "replicas": {"min": min, "max": max},
        "scaling": {"targetLagPerReplica": target, "scaleUpStabilizationSeconds": up,
                    "scaleDownStabilizationSeconds": down, "scaleToZero": zero},
        "backpressure": {"highWatermark": high, "lowWatermark": low},
    })


def obs(lag=0, pending=0, **kw) -> QueueObservation:
    return QueueObservation(lag=lag, pending=pending, **kw)


# An old history whose samples are all `value`, covering every window.
def steady(value: int, since: float = -10_000.0, zero: bool = False) -> ScaleHistory:
    return ScaleHistory((Sample(-400.0, value), Sample(-10.0, value)), since=since,
                        zero_since=since if zero else None)


BACKLOG = [
    # (observation, backlog, lag, source)
    (QueueObservation(lag=900, pending=500), 1_400, 900, "lag"),
    (QueueObservation(lag=None, pending=10, entries_added=1_000, entries_read=400), 610, 600, "entries"),
    (QueueObservation(lag=None, pending=10, entries_added=1_000, entries_read=400, stream_length=50), 60, 50,
     "entries"),  # XLEN bounds the difference (deleted entries are counted in it)
    (QueueObservation(lag=None, pending=3, counted=77, entries_added=1_000, entries_read=0), 80, 77, "counted"),
    (QueueObservation(lag=None, pending=2, stream_length=0), 2, 0, "length"),
    (QueueObservation(lag=None, pending=2, stream_length=9), None, None, "unknown"),  # never "zero"
    (QueueObservation(lag=None, pending=2, entries_added=5, entries_read=None, stream_length=9), None, None,
     "unknown"),
    (QueueObservation(reachable=False, error="timeout"), None, None, "unreachable"),
]


@pytest.mark.parametrize(("observation", "backlog", "lag", "source"), BACKLOG)
def test_backlog_is_never_a_guessed_zero(observation, backlog, lag, source):
    b = estimate_backlog(observation)
    assert (b.value, b.lag, b.source) == (backlog, lag, source)


DECISIONS = [
    # (name, spec, observation, history, current, kwargs, replicas, reason, message part)
    ("scale up at once", spec(), obs(900, 500), steady(1), 1, {}, 3, "ScaledUp", "1→3: backlog 1,400 > 2×500"),
    ("clamped at max", spec(max=3), obs(10_000), steady(3), 3, {}, 3, "ScalingLimited", "needs 20 replicas"),
    ("scale up to max", spec(max=3), obs(10_000), steady(1), 1, {}, 3, "ScaledUp", "(capped at max)"),
    ("below min goes up", spec(min=2), obs(0), steady(2), 1, {}, 2, "ScaledUp", "replicas.min is 2"),
    ("above max comes down", spec(max=2), obs(10_000), steady(4), 4, {}, 2, "ScaledDown", "above replicas.max"),
    ("steady", spec(), obs(300, 100), steady(1), 1, {}, 1, "Steady", "fits 1×500"),
    ("down waits for the window", spec(), obs(0), steady(4), 4, {}, 4, "ScaleDownStabilizing",
     "highest recommendation over 300s is 4"),
    ("down halves at most", spec(), obs(0), steady(1), 4, {}, 2, "ScaledDown", "4→2"),
    ("down to the window's highest", spec(), obs(600), steady(3), 4, {}, 3, "ScaledDown", "4→3"),
    ("never below min", spec(min=1), obs(0), steady(1), 1, {}, 1, "Steady", ""),
    ("zero after the window", spec(min=0, zero=True), obs(0), steady(0, zero=True), 1, {}, 0, "ScaledToZero",
     "for 300s"),
    ("zero needs zero pending", spec(min=0, zero=True), obs(0, pending=1), steady(0, zero=True), 1, {}, 1,
     "Steady", ""),
    ("zero needs the whole window", spec(min=0, zero=True), obs(0),
     ScaleHistory((Sample(-400.0, 0), Sample(-10.0, 0)), since=-10_000.0, zero_since=-100.0), 1, {}, 1,
     "ScaleDownStabilizing", "zero for 100s of the 300s"),
    ("zero steps down through one", spec(min=0, zero=True), obs(0), steady(0, zero=True), 2, {}, 1,
     "ScaledDown", "2→1"),
    ("a fresh history covers no window", spec(min=0, zero=True), obs(0), ScaleHistory(), 1, {}, 1,
     "ScaleDownStabilizing", ""),
    ("a fresh history does not scale down", spec(), obs(0), ScaleHistory(), 4, {}, 4, "ScaleDownStabilizing", ""),
    ("wake from zero", spec(min=0, zero=True), obs(1), steady(0, zero=True), 0, {}, 1, "ScaledUp", "0→1"),
    ("wake skips the up window", spec(min=0, zero=True, up=60), obs(5_000), steady(0, zero=True), 0, {}, 1,
     "ScaledUp", "0→1"),
    ("wake with the up window closed", spec(min=0, zero=True), obs(5_000), steady(0, zero=True), 0, {}, 4,
     "ScaledUp", "0→4"),
    ("idle at zero", spec(min=0, zero=True), obs(0), steady(0, zero=True), 0, {}, 0, "Idle", ""),
    ("up window: the lowest recommendation", spec(up=60), obs(2_000), steady(1), 1, {}, 1,
     "ScaleUpStabilizing", "lowest recommendation over 60s is 1"),
    ("up window: a sustained rise", spec(up=60), obs(2_000),
     ScaleHistory((Sample(-30.0, 3), Sample(-5.0, 4)), since=-10_000.0), 1, {}, 3, "ScaledUp", "1→3"),
    ("re-embedding keeps one", spec(min=0, zero=True), obs(0), steady(0, zero=True), 1, {"reembedding": True},
     1, "KeepOneWhileReembedding", ""),
    ("re-embedding wakes one", spec(min=0, zero=True), obs(0), steady(0, zero=True), 0, {"reembedding": True},
     1, "KeepOneWhileReembedding", "0→1"),
    ("re-embedding: down to one, not zero", spec(min=0, zero=True), obs(0), steady(0, zero=True), 2,
     {"reembedding": True}, 1, "ScaledDown", "2→1"),
    ("an HPA owns the replicas", spec(), obs(10_000), steady(1), 1, {"hpa": True}, 1, "ExternalAutoscaler", ""),
    ("Redis unreachable holds", spec(min=0, zero=True), QueueObservation(reachable=False, error="timed out"),
     steady(0, zero=True), 1, {}, 1, "RedisUnavailable", "timed out"),
    ("Redis unreachable holds at zero too", spec(min=0, zero=True), QueueObservation(reachable=False),
     steady(0, zero=True), 0, {}, 0, "RedisUnavailable", ""),
    ("nil lag, no estimate: hold", spec(min=0, zero=True), QueueObservation(lag=None, pending=0, stream_length=9),
     steady(0, zero=True), 1, {}, 1, "HoldUnknownBacklog", "upper bound"),
    ("nil lag at zero with entries: wake", spec(min=0, zero=True),
     QueueObservation(lag=None, pending=0, stream_length=9), steady(0, zero=True), 0, {}, 1, "ScaledUp", "0→1"),
    ("nil lag, estimated from entries-read", spec(), QueueObservation(lag=None, pending=0, entries_added=2_000,
     entries_read=500), steady(1), 1, {}, 3, "ScaledUp", "(entries)"),
]


@pytest.mark.parametrize(("spec_", "observation", "history", "current", "kwargs", "replicas", "reason", "part"),
                         [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS])
def test_decide(spec_, observation, history, current, kwargs, replicas, reason, part):
    d = decide(observation, spec_, history, 0.0, current=current, **kwargs)
    assert (d.replicas, d.reason) == (replicas, reason), d.message
    assert part in d.message
    assert d.patch is (reason != "ExternalAutoscaler")
    assert (scale_event(d) is not None) is (replicas != current)


def test_an_outage_then_recovery_waits_a_full_window_before_scaling_down():
    s, history, now = spec(), steady(1), 0.0
    d = decide(obs(2_000), s, history, now, current=1)
    assert d.replicas == 4
    d = decide(QueueObservation(reachable=False), s, d.history, 500.0, current=4)
    assert d.replicas == 4 and d.history.zero_since is None
    d = decide(obs(0), s, d.history, 600.0, current=4)  # the held 4 at t=500 is inside the window
    assert (d.replicas, d.reason) == (4, "ScaleDownStabilizing")
    d = decide(obs(0), s, d.history, 801.0, current=4)
    assert (d.replicas, d.reason) == (2, "ScaledDown")


def test_zero_is_reached_only_after_a_whole_window_of_zero_and_a_blip_restarts_it():
    s = spec(min=0, zero=True, down=60)
    d = decide(obs(0), s, ScaleHistory(since=-1_000.0), 0.0, current=1)
    assert d.replicas == 1 and d.history.zero_since == 0.0
    d = decide(obs(0, pending=1), s, d.history, 30.0, current=1)  # in flight: not idle
    assert d.replicas == 1 and d.history.zero_since is None
    d = decide(obs(0), s, d.history, 40.0, current=1)
    d = decide(obs(0), s, d.history, 99.0, current=1)
    assert d.replicas == 1, d.message
    d = decide(obs(0), s, d.history, 100.0, current=1)
    assert (d.replicas, d.reason) == (0, "ScaledToZero")


def test_history_stays_bounded():
    s, history = spec(down=3600), ScaleHistory()
    for t in range(2_000):
        history = decide(obs(t % 7 * 500), s, history, float(t), current=2).history
    assert len(history.samples) <= MAX_SAMPLES
    assert history.samples[-1].time == 1_999.0


def test_count_limit_is_enough_to_ask_for_max():
    s = spec(max=3, target=500)
    d = decide(QueueObservation(lag=None, pending=0, counted=count_limit(s)), s, steady(1), 0.0, current=1)
    assert d.replicas == 3 and d.limited


def test_defaults_come_from_the_types():
    s = StreamPipelineSpec.model_validate({"indexRef": {"name": "i"},
                                           "queue": {"redisSecretRef": {"name": "r"}, "stream": "s"}})
    target = Scaling.model_fields["target_lag_per_replica"].default
    d = decide(obs(target + 1), s, steady(1), 0.0, current=1)
    assert d.replicas == 2 and d.need == 2


# --- status --------------------------------------------------------------------------------------

HYSTERESIS = [  # (backlog, was on, on)
    (10_000, False, True), (9_999, False, False), (9_999, True, True), (5_001, True, True),
    (5_000, True, False), (None, True, True), (None, False, False),
]


@pytest.mark.parametrize(("backlog", "was_on", "on"), HYSTERESIS)
def test_backpressure_hysteresis(backlog, was_on, on):
    assert backpressure_on(backlog, spec(), was_on) is on


STATUS = [
    # (name, observation, current, replicas, ready, reembedding/hpa, phase, {condition: (status, reason)})
    ("running", obs(300), 1, 1, 1, {}, "Running", {"Ready": (True, "Running"), "ScalingActive": (True, "Steady"),
                                                    "Degraded": (False, "RedisReachable")}),
    ("scaling", obs(900, 500), 1, 1, 1, {}, "Scaling", {"Ready": (True, "Running"),
                                                         "ScalingActive": (True, "ScaledUp")}),
    ("idle", obs(0), 0, 0, 0, {}, "Idle", {"Ready": (True, "Idle")}),
    ("degraded", QueueObservation(reachable=False, error="Connection refused"), 2, 2, 2, {}, "Degraded",
     {"Ready": (False, "RedisUnavailable"), "Degraded": (True, "RedisUnavailable"),
      "ScalingActive": (False, "RedisUnavailable")}),
    ("backpressured", obs(20_000), 4, 4, 4, {}, "Backpressured",
     {"Backpressure": (True, "HighWatermark"), "ScalingLimited": (True, "TooManyReplicas")}),
    ("hpa", obs(0), 2, 2, 2, {"hpa": True}, "Running", {"ScalingActive": (False, "ExternalAutoscaler")}),
    ("no workers ready", obs(100), 1, 1, 0, {}, "Scaling", {"Ready": (False, "Scaling")}),
]


@pytest.mark.parametrize(("observation", "current", "replicas", "ready", "kwargs", "phase", "conditions"),
                         [s[1:] for s in STATUS], ids=[s[0] for s in STATUS])
def test_stream_status(observation, current, replicas, ready, kwargs, phase, conditions):
    s = spec(min=0, zero=True, max=4)
    d = decide(observation, s, steady(current, zero=current == 0), 0.0, current=current, **kwargs)
    fields, wanted = stream_status(s, d, replicas=replicas, ready_replicas=ready, conditions=None,
                                   last_scale_time="T0", generation=3, now="T1")
    assert fields["phase"] == phase
    by_type = {c.type: (c.status, c.reason) for c in wanted}
    for kind, expected in conditions.items():
        assert by_type[kind] == expected, kind
    assert fields["lastScaleTime"] == ("T1" if d.changed else "T0")
    assert fields["desiredReplicas"] == d.replicas and fields["observedGeneration"] == 3
    if observation.reachable:
        assert fields["backlog"] == d.backlog.value and fields["lag"] == d.backlog.lag
    else:
        assert "backlog" not in fields  # the last known values stay, not a blank read as zero


def test_backpressure_condition_keeps_its_state_between_the_watermarks():
    s = spec()
    on = stream_status(s, decide(obs(12_000), s, steady(4), 0.0, current=4), replicas=4, ready_replicas=4,
                       conditions=None, last_scale_time=None, generation=1, now="T1")[1]
    current = merge_conditions(None, on, 1, now="T1")
    between = decide(obs(7_000), s, steady(4), 1.0, current=4)
    _, wanted = stream_status(s, between, replicas=4, ready_replicas=4, conditions=current,
                              last_scale_time=None, generation=1, now="T2")
    assert {c.type: c.status for c in wanted}["Backpressure"] is True
    below = decide(obs(4_000), s, steady(4), 2.0, current=4)
    _, wanted = stream_status(s, below, replicas=4, ready_replicas=4, conditions=current,
                              last_scale_time=None, generation=1, now="T3")
    assert {c.type: c.status for c in wanted}["Backpressure"] is False
