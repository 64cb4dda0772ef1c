"""StreamPipeline status: a scaling decision and the Deployment's replicas -> status fields and conditions.

Conditions: Ready, Backpressure (hysteresis between the watermarks), ScalingActive (False while an
HPA owns the replicas or the backlog is unknown), ScalingLimited (at max with more backlog than max
replicas handle), Degraded (Redis unreachable: replicas held). merge_conditions sets the times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tributary_operator.api.v1alpha1 import StreamPhase, StreamPipelineSpec
from tributary_operator.core.conditions import ConditionSpec
from tributary_operator.core.streampipeline.scaling import ScaleDecision


def _was_true(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions or [])


def backpressure_on(backlog: int | None, spec: StreamPipelineSpec, was_on: bool) -> bool:
    """On at highWatermark or above, off at lowWatermark or below, unchanged in between or when unknown."""
    if backlog is None:
        return was_on
    if backlog >= spec.backpressure.high_watermark:
        return True
    if backlog <= spec.backpressure.low_watermark:
        return False
    return was_on


def stream_status(spec: StreamPipelineSpec, decision: ScaleDecision, *, replicas: int, ready_replicas: int,
                  conditions: Sequence[Mapping[str, Any]] | None, last_scale_time: str | None,
                  generation: int | None, now: str) -> tuple[dict[str, Any], list[ConditionSpec]]:
    """The status fields (camelCase, ready to patch) and the desired conditions.

    ``replicas`` / ``ready_replicas`` come from the Deployment's status; ``conditions`` and
    ``last_scale_time`` are the object's current ones; ``now`` the time written when it scales."""
    backlog = decision.backlog
    degraded = backlog.source == "unreachable"
    unknown = backlog.value is None
    pressure = backpressure_on(backlog.value, spec, _was_true(conditions, "Backpressure"))
    high, low = spec.backpressure.high_watermark, spec.backpressure.low_watermark
    desired = decision.replicas

    if degraded:
        phase = StreamPhase.DEGRADED
    elif pressure:
        phase = StreamPhase.BACKPRESSURED
    elif replicas != desired or ready_replicas != desired:
        phase = StreamPhase.SCALING
    elif desired == 0:
        phase = StreamPhase.IDLE
    else:
        phase = StreamPhase.RUNNING

    if degraded:
        ready = ConditionSpec("Ready", False, "RedisUnavailable", decision.message)
    elif desired == 0 and replicas == 0:
        ready = ConditionSpec("Ready", True, "Idle", "no backlog: zero replicas, woken by the first event")
    elif ready_replicas == 0:
        ready = ConditionSpec("Ready", False, "Scaling", f"waiting for workers: 0 of {desired} ready")
    else:
        ready = ConditionSpec("Ready", True, "Running", f"{ready_replicas} of {desired} workers ready")

    shown = "unknown" if unknown else f"{backlog.value:,}"
    if pressure:
        back = ConditionSpec("Backpressure", True, "HighWatermark",
                             f"backlog {shown} reached {high:,}; producers slow down until it is at or below {low:,}")
    else:
        back = ConditionSpec("Backpressure", False, "BelowWatermark", f"backlog {shown}; on at {high:,}")

    if decision.reason in ("ExternalAutoscaler", "RedisUnavailable", "HoldUnknownBacklog"):
        active = ConditionSpec("ScalingActive", False, decision.reason, decision.message)
    else:
        active = ConditionSpec("ScalingActive", True, decision.reason, decision.message)

    if decision.limited and desired == spec.replicas.max:
        limited = ConditionSpec("ScalingLimited", True, "TooManyReplicas", f"backlog {shown} needs "
                                f"{decision.need} replicas; replicas.max is {spec.replicas.max}")
    else:
        limited = ConditionSpec("ScalingLimited", False, "DesiredWithinRange", "")

    if degraded:
        degraded_c = ConditionSpec("Degraded", True, "RedisUnavailable", decision.message)
    else:
        degraded_c = ConditionSpec("Degraded", False, "RedisReachable", "")

    fields = {
        "phase": phase.value,
        "observedGeneration": generation,
        "replicas": replicas,
        "desiredReplicas": desired,
        "lag": backlog.lag,
        "pending": backlog.pending,
        "backlog": backlog.value,
        "lastScaleTime": now if decision.changed else last_scale_time,
    }
    if degraded:  # what Redis said last stays shown, rather than a blank that reads as zero
        for key in ("lag", "pending", "backlog"):
            fields.pop(key)
    return fields, [ready, back, active, limited, degraded_c]
