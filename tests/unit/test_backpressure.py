"""The backpressure record (contract.backpressure) and which watermarks producers follow
(streaming.backpressure): the record when it is there, parses and is about their group, else the flags."""

from __future__ import annotations

import json

import pytest
from tributary_workers.contract.backpressure import BackpressureRecord, parse_backpressure, ttl_for_interval
from tributary_workers.contract.keys import backpressure_key
from tributary_workers.streaming.backpressure import FLAGS, OPERATOR, Watermarks, decide

NOW = 1_800_000_000.0
FLAG_MARKS = Watermarks(10, 5)  # the producer's flags


def record(**overrides) -> dict:
    return {"high": 20, "low": 8, "on": True, "backlog": 31, "group": "workers", "pipeline": "ns/live",
            "at": NOW - 3, "ttl": 45, **overrides}


def raw(**overrides) -> str:
    return json.dumps(record(**overrides))


def test_the_key_is_per_stream():
    assert backpressure_key("docs:live") == "tributary:backpressure:docs:live"


def test_a_record_round_trips_and_ignores_fields_it_does_not_know():
    parsed = parse_backpressure(raw(future_field=1))
    assert parsed == BackpressureRecord(**record())
    assert parse_backpressure(parsed.to_json()) == parsed
    assert parse_backpressure(raw(backlog=None)).backlog is None
    assert parse_backpressure(raw().encode()) == parsed  # as a client without decode_responses reads it


@pytest.mark.parametrize("value", [
    None, "", "not json", "[1, 2]", "42", json.dumps({"high": 20}),
    raw(low=20), raw(low=30), raw(high=0), raw(low=-1), raw(on="maybe"), raw(ttl=0), raw(at="yesterday"),
    b"\xff\xfe",
])
def test_anything_invalid_reads_as_no_record(value):
    assert parse_backpressure(value) is None


def test_freshness_is_the_ttl_either_side_and_state_excludes_backlog_and_time():
    rec = BackpressureRecord(**record(at=NOW, ttl=30))
    assert rec.fresh(NOW + 30) and rec.fresh(NOW - 30) and not rec.fresh(NOW + 31)
    assert rec.same_state(rec.model_copy(update={"backlog": 1, "at": NOW + 100}))
    for change in ({"on": False}, {"high": 21}, {"low": 1}, {"pipeline": "ns/other"}, {"ttl": 31}):
        assert not rec.same_state(rec.model_copy(update=change)), change
    assert not rec.same_state(None)


@pytest.mark.parametrize(("interval", "ttl"), [(1, 10), (3, 10), (4, 12), (15, 45), (3600, 10800)])
def test_the_ttl_is_three_polling_intervals_at_least_ten_seconds(interval, ttl):
    assert ttl_for_interval(interval) == ttl


STALE = raw(at=NOW - 100)  # older than its TTL of 45 s: watermarks only
OFF = raw(on=False)
OTHER_GROUP = raw(group="someone-else")


@pytest.mark.parametrize(("stored", "backlog", "was", "adopted", "throttled", "source", "high"), [
    # no record (absent, invalid, another group's): the flags 10/5 and the producer's own state
    (None, 4, True, None, False, FLAGS, 10),
    (None, 7, True, None, True, FLAGS, 10),
    (None, 7, False, None, False, FLAGS, 10),
    (None, 10, False, None, True, FLAGS, 10),
    ("not json", 12, False, None, True, FLAGS, 10),
    (raw(low=25), 12, False, None, True, FLAGS, 10),
    (OTHER_GROUP, 12, False, None, True, FLAGS, 10),
    # a fresh record: its watermarks 20/8; its state is adopted when news, the backlog decides outside the band
    (raw(), 12, False, None, True, OPERATOR, 20),  # a new producer starts held: the pipeline is Backpressured
    (OFF, 12, True, None, False, OPERATOR, 20),
    (raw(), 5, False, None, False, OPERATOR, 20),  # at or below low: released, whatever the record says
    (OFF, 20, False, None, True, OPERATOR, 20),  # at high: held before the operator's next pass
    (raw(), 12, False, ("ns/live", True), False, OPERATOR, 20),  # released itself since: not re-adopted
    (OFF, 12, False, ("ns/live", True), False, OPERATOR, 20),  # the flip to off is adopted
    (raw(), 12, False, ("ns/live", False), True, OPERATOR, 20),  # the flip to on is adopted
    (OFF, 15, True, ("ns/live", False), True, OPERATOR, 20),  # nothing new: the own state holds
    # a stale record: watermarks 20/8 only, the producer's own state (flags alone would throttle at 12)
    (STALE, 12, False, None, False, OPERATOR, 20),
    (STALE, 12, True, None, True, OPERATOR, 20),
    (STALE, 25, False, None, True, OPERATOR, 20),
    (STALE, 8, True, None, False, OPERATOR, 20),
])
def test_which_watermarks_and_state_a_producer_follows(stored, backlog, was, adopted, throttled, source, high):
    got, rule, _ = decide(stored, NOW, "workers", FLAG_MARKS, backlog, was, adopted)
    assert (got, rule.source, rule.high) == (throttled, source, high)
    assert rule.low == (8 if source == OPERATOR else 5)


def test_a_fresh_records_state_is_remembered_once_adopted():
    _, rule, adopted = decide(raw(), NOW, "workers", FLAG_MARKS, 12, False, None)
    assert adopted == ("ns/live", True) and rule.pipeline == "ns/live" and rule.operator_on is True
    assert decide(STALE, NOW, "workers", FLAG_MARKS, 12, False, adopted)[2] == adopted
    assert "StreamPipeline ns/live (high watermark 20, low 8)" in rule.describe("docs:live")
    assert "no operator record, using the flags (high watermark 10, low 5)" in FLAG_MARKS.describe("docs:live")
