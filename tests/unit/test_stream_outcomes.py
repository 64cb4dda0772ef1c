"""Pure logic of per-target outcomes and applied-generation reports."""

from __future__ import annotations

import pytest
from tributary_workers.contract.routing import Applied, parse_applied
from tributary_workers.pipeline.indexer import DocResult, Status
from tributary_workers.streaming.generation import Generations
from tributary_workers.streaming.outcomes import DocOutcome, TargetResult, classify, repairs_by_collection

pytestmark = pytest.mark.unit


def result(collection: str, active: bool, status: Status, reason: str = "") -> TargetResult:
    return TargetResult(collection, active, DocResult("d", 3, status, reason=reason))


def test_all_targets_accepting_acknowledges_with_the_active_result():
    outcome = classify([result("v1", True, Status.UNCHANGED), result("v2", False, Status.SUCCEEDED)])
    assert outcome.failure is None and outcome.active.status is Status.UNCHANGED and outcome.repairs == []


def test_a_secondary_failure_alone_acknowledges_and_asks_for_repair():
    outcome = classify([result("v1", True, Status.SUCCEEDED), result("v2", False, Status.FAILED, "boom"),
                        result("old", False, Status.SUPERSEDED)])
    assert outcome.failure is None and outcome.active.status is Status.SUCCEEDED and outcome.repairs == ["v2"]


def test_an_active_failure_fails_the_document_whatever_the_secondaries_did():
    outcome = classify([result("v1", True, Status.FAILED, "too long"), result("v2", False, Status.SUCCEEDED)])
    assert outcome.failure == "collection v1: too long"


def test_no_active_result_is_a_failure():
    assert classify([result("v2", False, Status.SUCCEEDED)]).failure == "no result from the active target"
    assert classify([]).failure == "no result from the active target"


def test_repairs_group_by_collection_keeping_the_newest_version():
    outcomes = [("a", 2, DocOutcome(repairs=["v2"])), ("b", 1, DocOutcome(repairs=["v2", "old"])),
                ("a", 1, DocOutcome(repairs=["v2"])), ("c", 4, DocOutcome())]
    assert repairs_by_collection(outcomes) == {"v2": {"a": 2, "b": 1}, "old": {"b": 1}}


@pytest.mark.parametrize("raw, want", [
    ('{"generation": 4, "at": 1700000000.5}', Applied(generation=4, at=1700000000.5)),
    (b'{"generation": 4, "at": 1700000000}', Applied(generation=4, at=1700000000.0)),
    (b"7", Applied(generation=7)),  # the plain integer older workers wrote
    ("0", Applied(generation=0)),
])
def test_applied_values_parse(raw, want):
    assert parse_applied(raw) == want


@pytest.mark.parametrize("raw", [b"", b"seven", b"-1", b"true", b"[1]", b'{"at": 5}', b'{"generation": -2}',
                                 b'{"generation": "x"}', b"\xff"])
def test_unparsable_applied_values_count_as_nothing_applied(raw):
    assert parse_applied(raw) is None


class FakeTarget:
    def __init__(self, ready: bool, collection: str = "c"):
        self.ready, self.collection = ready, collection

    def warm_up(self):
        if not self.ready:
            raise ConnectionError("unreachable")


def test_a_generation_counts_as_applied_only_once_every_target_warmed_up():
    generations = Generations()
    generations.routed_to(1, [FakeTarget(True)])
    assert generations.applied == 1
    cold = FakeTarget(False, "v2")
    generations.routed_to(2, [FakeTarget(True), cold])
    assert generations.applied == 1, "the previous generation stays the reported one"
    generations.warm([FakeTarget(True), cold])
    assert generations.applied == 1
    cold.ready = True
    generations.note([FakeTarget(True), cold])
    assert generations.applied == 2
