"""bench/swap_queries.py's summariser: queries fall in the phase of their scheduled time, failed ones
count but carry no latency."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "swap_queries", Path(__file__).resolve().parents[2] / "bench" / "swap_queries.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # dataclasses look their module up
spec.loader.exec_module(bench)


def sample(at: float, latency_ms: float, error: bool = False, failed: bool = False):
    return bench.Sample(at, latency_ms / 1000, latency_ms / 2000, error, failed)


def test_phases_follow_the_marks():
    marks = {"re-embedding": 10.0, "swap": 20.0, "after": 20.5}
    assert [bench.phase_of(t, marks) for t in (0, 9.99, 10, 19.9, 20, 20.49, 20.5, 99)] == [
        "before", "before", "re-embedding", "re-embedding", "swap", "swap", "after", "after"]
    assert bench.phase_of(50, {}) == "before"  # no marks yet: everything is before


def test_summary_counts_errors_and_percentiles_of_answered_queries():
    marks = {"re-embedding": 10.0, "swap": 20.0, "after": 21.0}
    samples = [sample(1, 10), sample(2, 20), sample(3, 30),
               sample(20.2, 5, error=True), sample(20.3, 900, error=True, failed=True),
               sample(25, 40)]
    out = bench.summarise(samples, marks)
    assert out["before"]["n"] == 3 and out["before"]["p50_ms"] == pytest.approx(20)
    assert out["before"]["p99_ms"] == pytest.approx(29.8)
    assert out["before"]["service_p50_ms"] == pytest.approx(10)
    assert (out["swap"]["n"], out["swap"]["errors"], out["swap"]["failed"]) == (2, 2, 1)
    assert out["swap"]["p99_ms"] == pytest.approx(5)  # the failed query's time is not a latency
    assert out["re-embedding"]["n"] == 0 and math.isnan(out["re-embedding"]["p50_ms"])
    assert out["after"]["p50_ms"] == pytest.approx(40)
