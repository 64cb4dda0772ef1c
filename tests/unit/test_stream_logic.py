"""Pure logic of the streaming path: collapse, delivery decisions, hysteresis, safe trimming, routing."""

from __future__ import annotations

import itertools

import pytest
from tributary_workers.contract.routing import RoutingError, parse_routing
from tributary_workers.streaming.decisions import (
    collapse,
    dead_letter_after_failure,
    exhausted_deliveries,
    latency_seconds,
)
from tributary_workers.streaming.events import parse_event
from tributary_workers.streaming.producer import Hysteresis
from tributary_workers.streaming.queue import (
    Entry,
    GroupState,
    StreamNames,
    next_id,
    oldest_unacknowledged_id,
    parse_id,
    lag_estimate,
    safe_trim_id,
    stream_backlog,
)


def item(entry_id: str, op: str, doc_id: str, version: int):
    data = {"op": op, "doc_id": doc_id, "version": version}
    if op == "upsert":
        data["content"] = f"{doc_id} at {version}"
    return Entry(entry_id, {}), parse_event(data)


# --- collapse -----------------------------------------------------------------------------------


def test_collapse_keeps_the_highest_version_per_document_in_stream_order():
    items = [item("1-0", "upsert", "a", 1), item("1-1", "upsert", "b", 5), item("1-2", "upsert", "a", 3),
             item("1-3", "delete", "b", 4), item("1-4", "upsert", "a", 2), item("1-5", "delete", "c", 9)]
    kept, superseded = collapse(items)
    assert [(e.id, ev.doc_id, ev.version) for e, ev in kept] == [("1-1", "b", 5), ("1-2", "a", 3), ("1-5", "c", 9)]
    assert sorted(e.id for e, _ in superseded) == ["1-0", "1-3", "1-4"]


def test_collapse_a_delete_wins_when_newest():
    kept, superseded = collapse([item("1-0", "upsert", "a", 1), item("1-1", "delete", "a", 2)])
    assert [(ev.op, ev.version) for _, ev in kept] == [("delete", 2)]
    assert len(superseded) == 1


def test_collapse_ties_go_to_the_first_like_the_ledger():
    kept, superseded = collapse([item("1-0", "upsert", "a", 7), item("1-1", "delete", "a", 7)])
    assert [e.id for e, _ in kept] == ["1-0"] and [e.id for e, _ in superseded] == ["1-1"]


def test_collapse_result_is_independent_of_arrival_order_for_distinct_versions():
    ops = [("upsert", 1), ("delete", 4), ("upsert", 3), ("upsert", 2)]
    for order in itertools.permutations(ops):
        items = [item(f"1-{i}", op, "doc", v) for i, (op, v) in enumerate(order)]
        kept, superseded = collapse(items)
        assert [(ev.op, ev.version) for _, ev in kept] == [("delete", 4)]
        assert len(superseded) == 3


def test_collapse_of_nothing():
    assert collapse([]) == ([], [])


# --- deliveries and dead letters ----------------------------------------------------------------


@pytest.mark.parametrize(("deliveries", "exhausted"), [(1, False), (4, False), (5, False), (6, True), (60, True)])
def test_exhausted_deliveries(deliveries, exhausted):
    assert exhausted_deliveries(deliveries, max_deliveries=5) is exhausted


@pytest.mark.parametrize(("deliveries", "transient", "dead"), [
    (1, False, True),  # a per-document failure never gets better
    (1, True, False), (4, True, False),  # a transient failure is retried on a later delivery...
    (5, True, True),  # ...until the last allowed one
])
def test_dead_letter_after_failure(deliveries, transient, dead):
    assert dead_letter_after_failure(deliveries, 5, transient) is dead


def test_latency_from_produced_at_or_the_entry_id():
    with_stamp = parse_event({"op": "delete", "doc_id": "a", "version": 1, "produced_at": 1_000_000_000})
    assert latency_seconds(with_stamp, "5-0", 3_500_000_000) == pytest.approx(2.5)
    without = parse_event({"op": "delete", "doc_id": "a", "version": 1})
    assert latency_seconds(without, "1000-3", 1_250_000_000) == pytest.approx(0.25)
    assert latency_seconds(with_stamp, "5-0", 0) == 0.0  # clocks apart: never negative


# --- hysteresis ---------------------------------------------------------------------------------


def test_hysteresis_throttles_at_high_and_releases_only_at_low():
    h = Hysteresis(high=10, low=4)
    trace = [(b, h.update(b)) for b in (0, 9, 10, 9, 5, 11, 5, 4, 5, 9, 10, 3)]
    assert trace == [(0, False), (9, False), (10, True), (9, True), (5, True), (11, True), (5, True),
                     (4, False), (5, False), (9, False), (10, True), (3, False)]


@pytest.mark.parametrize(("high", "low"), [(5, 5), (5, 6), (5, -1)])
def test_hysteresis_needs_low_below_high(high, low):
    with pytest.raises(ValueError):
        Hysteresis(high, low)


# --- ids and safe trimming ----------------------------------------------------------------------


def group(last: str, pending: int = 0, pending_min: str | None = None, lag: int | None = 0, name="g") -> GroupState:
    return GroupState(name=name, last_delivered_id=last, pending=pending, lag=lag, pending_min_id=pending_min)


def test_next_id():
    assert next_id("5-0") == "5-1"
    assert next_id(b"5-7") == "5-8"
    assert next_id(f"5-{2**64 - 1}") == "6-0"
    assert parse_id("17") == (17, 0)


def test_trim_below_the_next_undelivered_entry_when_nothing_is_pending():
    assert safe_trim_id([group("100-3")]) == "100-4"


def test_trim_stops_at_the_oldest_pending_entry():
    assert safe_trim_id([group("100-3", pending=2, pending_min="90-0")]) == "90-0"


def test_pending_count_without_min_is_ignored():
    assert oldest_unacknowledged_id(group("100-3", pending=0, pending_min="90-0")) == "100-4"


def test_trim_takes_the_slowest_group():
    groups = [group("200-0", name="fast"), group("150-0", pending=1, pending_min="120-5", name="slow"),
              group("300-0", pending=3, pending_min="130-0", name="other")]
    assert safe_trim_id(groups) == "120-5"


def test_ids_compare_numerically_not_as_text():
    # "99-0" > "100-0" as text; as ids it is smaller and must win.
    assert safe_trim_id([group("100-0", name="a"), group("98-9", name="b")]) == "98-10"
    assert safe_trim_id([group("1000-0", pending=1, pending_min="999-9"), group("1000-0")]) == "999-9"


def test_nothing_to_trim_without_groups_or_before_the_first_delivery():
    assert safe_trim_id([]) is None
    assert safe_trim_id([group("0-0")]) is None
    assert safe_trim_id([group("0-0"), group("500-0")]) is None


def test_trimming_never_removes_an_unacknowledged_entry():
    """Brute force: for random group states over a small stream, MINID keeps every entry some group
    has pending or has not yet been delivered."""
    import random

    rng = random.Random(7)
    ids = [f"{ms}-{seq}" for ms in range(1, 8) for seq in range(3)]
    for _ in range(2000):
        groups, needed = [], set()
        for g in range(rng.randint(1, 3)):
            last = rng.randrange(-1, len(ids))
            delivered = ids[:last + 1]
            pending = [i for i in delivered if rng.random() < 0.3]
            groups.append(group(delivered[-1] if delivered else "0-0", len(pending),
                                min(pending, key=parse_id) if pending else None, name=str(g)))
            needed |= set(pending) | set(ids[last + 1:])
        minid = safe_trim_id(groups)
        removed = {i for i in ids if minid is not None and parse_id(i) < parse_id(minid)}
        assert not removed & needed, (groups, minid)


def test_backlog_is_lag_plus_pending_of_the_own_group_only():
    groups = [group("1-0", pending=3, lag=10), group("1-0", pending=1, lag=None, name="x"),
              group("0-0", pending=0, lag=50_000, name="abandoned")]
    assert stream_backlog(groups, length=99, group="g") == 13
    assert stream_backlog(groups, length=99, group="x") == 1
    assert stream_backlog(groups, length=99, group="missing") == 99, "no own group yet: XLEN"
    assert stream_backlog([], length=99, group="g") == 99


@pytest.mark.parametrize(("added", "read", "length", "estimate"), [
    (120, 100, 500, 20),  # both counters known: their difference
    (120, 100, 5, 5),  # deleted entries inflate the difference: capped by XLEN
    (100, 120, 50, 0),  # never negative
    (None, 100, 42, 42),  # entries-read unknown: XLEN, an upper bound
    (120, None, 42, 42),
    (None, None, 0, 0),
])
def test_lag_estimate_when_redis_reports_nil(added, read, length, estimate):
    assert lag_estimate(added, read, length) == estimate


def test_stream_names():
    names = StreamNames.for_index("handbook")
    assert (names.stream, names.group, names.dead_letter) == (
        "tributary:stream:handbook", "tributary", "tributary:stream:handbook:dead")
    assert StreamNames("s", "g", "d").dead_letter == "d"
    with pytest.raises(ValueError):
        StreamNames("s", "g", "s")


# --- routing record -----------------------------------------------------------------------------


def test_routing_record_parses_targets_and_generation():
    record = parse_routing('{"targets": [{"collection": "docs_v1", "model": null}, '
                           '{"collection": "docs_v2", "model": "/models/e5"}], "generation": 4}')
    assert [(t.collection, t.model) for t in record.targets] == [("docs_v1", None), ("docs_v2", "/models/e5")]
    assert record.generation == 4


@pytest.mark.parametrize(("raw", "fragment"), [
    ("not json", "not JSON"),
    ('{"targets": []}', "targets"),
    ('{"targets": [{"collection": "bad-name"}]}', "targets"),
    ('{"targets": [{"collection": "a"}, {"collection": "a"}]}', "appears twice"),
    ('{"targets": [{"collection": "a"}], "generation": -1}', "generation"),
    ('{"targets": [{"collection": "a", "extra": 1}]}', "targets"),
])
def test_invalid_routing_records(raw, fragment):
    with pytest.raises(RoutingError, match=fragment):
        parse_routing(raw)
