"""The validate step's verdict math (reembed/validate.py), table-tested; the retire step's key patterns."""

from __future__ import annotations

import argparse

import pytest
from tributary_workers.cli.index_admin import build_parser
from tributary_workers.cli.index_admin_gates import sample_queries
from tributary_workers.contract.reembed import GateName, StepReport
from tributary_workers.reembed.swap import ledger_patterns
from tributary_workers.reembed.validate import (
    dimension_gate,
    document_ratio,
    mean_overlap,
    metric_gate,
    overlap,
    overlap_gate,
    ratio_gate,
    recall_gate,
    self_recall,
    verdict,
)


@pytest.mark.parametrize(("candidate", "active", "expected"), [
    (15, 15, 1.0), (10, 15, 10 / 15), (0, 0, 1.0), (3, 0, 1.0), (0, 4, 0.0), (16, 15, 16 / 15),
])
def test_document_ratio(candidate, active, expected):
    assert document_ratio(candidate, active) == pytest.approx(expected)


@pytest.mark.parametrize(("candidate", "active", "minimum", "passed", "reason"), [
    (99, 100, 0.99, True, "RatioMet"), (98, 100, 0.99, False, "RatioTooLow"), (0, 0, 1.0, True, "RatioMet"),
])
def test_ratio_gate(candidate, active, minimum, passed, reason):
    gate = ratio_gate(candidate, active, minimum)
    assert (gate.name, gate.passed, gate.reason, gate.threshold) == (GateName.DOCUMENT_RATIO, passed, reason, minimum)
    assert str(minimum) in gate.message and str(active) in gate.message


@pytest.mark.parametrize(("actual", "expected", "passed"), [(256, 256, True), (256, 384, False), (None, 384, False)])
def test_dimension_gate(actual, expected, passed):
    gate = dimension_gate(actual, expected)
    assert gate.passed is passed and gate.reason == ("DimensionMatches" if passed else "DimensionMismatch")


@pytest.mark.parametrize(("actual", "expected", "passed"), [
    ("COSINE", "COSINE", True), ("cosine", "COSINE", True), ("L2", "COSINE", False), (None, "COSINE", False),
])
def test_metric_gate(actual, expected, passed):
    assert metric_gate(actual, expected).passed is passed


@pytest.mark.parametrize(("own", "hits", "expected"), [
    ([], [], 1.0),
    (["a", "b"], [{"a", "x"}, {"b"}], 1.0),
    (["a", "b", "c", "d"], [{"a"}, {"x"}, {"c"}, set()], 0.5),
    (["a"], [{"b", "c"}], 0.0),
])
def test_self_recall(own, hits, expected):
    assert self_recall(own, hits) == pytest.approx(expected)


def test_self_recall_needs_one_hit_list_per_sample():
    with pytest.raises(ValueError):
        self_recall(["a", "b"], [{"a"}])


@pytest.mark.parametrize(("recall", "minimum", "passed"), [(0.9, 0.9, True), (0.89, 0.9, False), (1.0, 1.0, True)])
def test_recall_gate(recall, minimum, passed):
    gate = recall_gate(recall, 50, 10, minimum)
    assert (gate.name, gate.passed, gate.value) == (GateName.SELF_RETRIEVAL, passed, recall)


@pytest.mark.parametrize(("active", "candidate", "expected"), [
    (set(), set(), 1.0), (set(), {"a"}, 1.0), ({"a", "b"}, {"a", "b", "c"}, 1.0), ({"a", "b"}, {"b"}, 0.5),
    ({"a"}, {"z"}, 0.0),
])
def test_overlap(active, candidate, expected):
    assert overlap(active, candidate) == pytest.approx(expected)


def test_mean_overlap_and_its_gate():
    value = mean_overlap([({"a", "b"}, {"a"}), ({"c"}, {"c"})])
    assert value == pytest.approx(0.75)
    assert mean_overlap([]) == 1.0
    ungated = overlap_gate(0.1, 2, 10, None)
    assert (ungated.passed, ungated.reason, ungated.threshold) == (True, "NotGated", None)
    assert overlap_gate(value, 2, 10, 0.75).passed and not overlap_gate(value, 2, 10, 0.8).passed


@pytest.mark.parametrize(("passes", "ok", "reason"), [
    ((True, True, True), True, "Validated"),
    ((True, False, True), False, "GateFailed"),
    ((False, False, True), False, "GateFailed"),
])
def test_verdict(passes, ok, reason):
    gates = [ratio_gate(10, 10 if passes[0] else 20, 0.99), dimension_gate(256, 256 if passes[1] else 384),
             overlap_gate(0.0, 1, 10, None if passes[2] else 0.5)]
    report = verdict(gates, {"sampled": 3})
    assert (report.ok, report.reason, report.counts) == (ok, reason, {"sampled": 3})
    for gate in gates:
        assert (gate.name.value in report.message) is (not gate.passed)
    assert StepReport.from_json(report.to_json()) == report  # what the operator reads back


def test_ledger_patterns_match_the_ledger_keys_of_one_collection_only():
    import fnmatch

    ledger, provenance = ledger_patterns("coll_v2")
    assert fnmatch.fnmatchcase("tributary:ledger:{coll_v2}:docs/a.md", ledger)
    assert fnmatch.fnmatchcase("tributary:provenance:{coll_v2}:ingestionjob/ns/x", provenance)
    assert not fnmatch.fnmatchcase("tributary:ledger:{coll_v2_old}:a.md", ledger)


def test_subcommands_dispatch_by_their_function(monkeypatch):
    monkeypatch.delenv("TRIBUTARY_MIN_RECALL_AT_K", raising=False)
    args = build_parser().parse_args(["validate", "--collection", "c", "--active-collection", "a"])
    assert args.func.__name__ == "validate" and args.min_recall_at_k is None and args.sample_queries == ()
    assert build_parser().parse_args(["swap"]).func.__name__ == "swap"
    assert build_parser().parse_args(["provision"]).func.__name__ != "validate"
    assert sample_queries('["a", "b"]') == ("a", "b")
    for bad in ('{"a": 1}', '["a", 3]', "[", '[""]'):
        with pytest.raises(argparse.ArgumentTypeError):
            sample_queries(bad)
