"""The Lease rules that keep one active operator per watched scope (pure, table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tributary_operator.core.leadership import LEASE_NAME, decide_lease, lease_locations

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


CASES = [
    ("no Lease yet: create it", None, "create", "a"),
    ("ours: renew", {"holderIdentity": "a", "renewTime": at(3), "leaseDurationSeconds": 15}, "renew", "a"),
    ("held and fresh: stand by", {"holderIdentity": "b", "renewTime": at(3), "leaseDurationSeconds": 15},
     "stand-by", None),
    ("held but expired: take over", {"holderIdentity": "b", "renewTime": at(16), "leaseDurationSeconds": 15,
                                     "leaseTransitions": 2}, "take-over", "a"),
    ("released (no holder): take over", {"holderIdentity": None, "renewTime": at(1)}, "take-over", "a"),
    ("the holder's own duration counts", {"holderIdentity": "b", "renewTime": at(20), "leaseDurationSeconds": 60},
     "stand-by", None),
]


@pytest.mark.parametrize(("case", "current", "action", "holder"), CASES, ids=[c[0] for c in CASES])
def test_decide_lease(case, current, action, holder):
    decision = decide_lease(current, "a", NOW)
    assert decision.action == action
    if holder is None:
        assert decision.spec is None and decision.holder == current["holderIdentity"]
    else:
        assert decision.spec["holderIdentity"] == holder
        assert decision.spec["renewTime"] == at(0)


def test_a_take_over_counts_the_transition():
    decision = decide_lease({"holderIdentity": "b", "renewTime": at(30), "leaseTransitions": 2}, "a", NOW)
    assert decision.spec["leaseTransitions"] == 3 and decision.spec["acquireTime"] == at(0)


def test_overlapping_scopes_share_a_lease():
    assert lease_locations(["team-b", "team-a", "team-b"], "ops") == [("team-a", LEASE_NAME), ("team-b", LEASE_NAME)]
    assert set(lease_locations(["team-a"], "ops")) & set(lease_locations(["team-a", "team-c"], "x"))
    assert lease_locations([], "tributary-system") == [("tributary-system", f"{LEASE_NAME}-cluster")]
