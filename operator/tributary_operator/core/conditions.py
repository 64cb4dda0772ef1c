"""The one place that writes Kubernetes-style status: conditions, and patches that skip no-ops.

Conventions followed (from the Kubernetes API conventions, as in metav1.Condition):
- lastTransitionTime changes only when a condition's status changes, not on a new reason/message;
- every condition carries the observedGeneration it was computed from;
- a status write that would change nothing is not sent at all (no watch-event churn, no
  resourceVersion bumps, no wake-ups of everything watching the resource).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tributary_operator.api.v1alpha1 import plain_data


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Problem:
    """Why an object cannot make progress: a CamelCase reason and a message a person can act on."""

    reason: str
    message: str
    permanent: bool = False  # retrying cannot help until the spec changes


@dataclass(frozen=True)
class ConditionSpec:
    """A desired condition; the helper fills in the times."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""


def _status_word(status: bool | None) -> str:
    return "Unknown" if status is None else ("True" if status else "False")


def merge_conditions(
    current: list[Mapping[str, Any]] | None,
    desired: list[ConditionSpec],
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Conditions after applying desired ones: transition times kept unless the status flips.

    Conditions of other types that are present today are kept as they are (another writer may own
    them); order follows the current list, new types appended.
    """
    now = now or utc_now()
    by_type = {c["type"]: dict(c) for c in current or []}
    order = [c["type"] for c in current or []]
    for want in desired:
        status = _status_word(want.status)
        old = by_type.get(want.type)
        changed_status = old is None or old.get("status") != status
        by_type[want.type] = {
            "type": want.type,
            "status": status,
            "reason": want.reason,
            "message": want.message,
            "lastTransitionTime": now if changed_status else old.get("lastTransitionTime", now),
            "observedGeneration": generation,
        }
        if want.type not in order:
            order.append(want.type)
    return [by_type[t] for t in order]


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``desired`` that differ from ``current`` (top level; None deletes a field).

    An empty result means there is nothing to write. Lists and nested objects are compared whole
    and replaced whole, which is what a JSON merge patch does with them anyway.
    """
    current = current or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if value is None:
            if current.get(key) is not None:
                patch[key] = None
        elif plain_data(current.get(key)) != plain_data(value):
            patch[key] = value
    return patch


# Ready reasons that are the normal course of things: no Warning Event for them.
PROGRESS_REASONS = frozenset({"Pending", "Running", "Suspended", "Succeeded", "PartiallySucceeded", "Ready",
                              "Idle", "Scaling", "Provisioning", "Progressing"})


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal or Warning
    reason: str
    message: str


def ready_event(current: list[Mapping[str, Any]] | None, desired: list[ConditionSpec]) -> EventSpec | None:
    """One Event per change of cause, not one per retry: a Warning when Ready turns False for a
    reason that is not progress (or for a new such reason), a Normal 'Recovered' when it clears."""
    want = next((c for c in desired if c.type == "Ready"), None)
    if want is None:
        return None
    old = next((c for c in current or [] if c.get("type") == "Ready"), None)
    old_reason = old.get("reason") if old else None
    old_problem = old is not None and old.get("status") == "False" and old_reason not in PROGRESS_REASONS
    new_problem = want.status is False and want.reason not in PROGRESS_REASONS
    if new_problem and (not old_problem or old_reason != want.reason):
        return EventSpec("Warning", want.reason, want.message)
    if old_problem and not new_problem:
        return EventSpec("Normal", "Recovered", f"{old_reason} resolved: {want.message}")
    return None
