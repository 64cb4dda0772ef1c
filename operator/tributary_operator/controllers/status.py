"""Writing a reconcile's outcome onto the object, the same way for every kind: conditions merged
(times kept), no-op writes skipped, one Event per change of cause, an Event per phase change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from tributary_operator.core.conditions import ConditionSpec, merge_conditions, ready_event, status_patch

QUIET_PHASES = ("Failed", "Pending")  # their cause already has a Warning Event (ready_event)


def write_status(body: kopf.Body, patch: kopf.Patch, status: Mapping[str, Any], fields: dict[str, Any],
                 conditions: Sequence[ConditionSpec], generation: int | None) -> dict[str, Any]:
    """Patch what changed into ``patch.status``; returns the changes."""
    fields = {**fields, "observedGeneration": generation}
    fields["conditions"] = merge_conditions(status.get("conditions"), list(conditions), generation)
    changes = status_patch(status, fields)
    if changes:
        patch.status.update(changes)
    event = ready_event(status.get("conditions"), list(conditions))
    if event is not None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if "phase" in changes and changes["phase"] not in QUIET_PHASES:
        ready = next((c.message for c in conditions if c.type == "Ready"), "")
        kopf.info(body, reason=changes["phase"], message=f"{status.get('phase') or 'New'} -> {changes['phase']}: {ready}")
    return changes
