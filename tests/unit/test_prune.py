"""The prune decision (batch/prune.py): what vanished from the source, and the guard rails."""

from __future__ import annotations

import pytest
from tributary_workers.batch.prune import plan_prune
from tributary_workers.ledger import LedgerRecord, Provenance


def record(fence: int, deleted: bool = False) -> LedgerRecord:
    return LedgerRecord(fence=fence, content_hash=None if deleted else "h", data_version=None if deleted else fence,
                        deleted=deleted)


def everywhere(_origin: str) -> bool:
    return True


PROVENANCE = {f"d{i}": Provenance(f"f{i}", 10) for i in range(10)}
LISTED_ALL = {f"f{i}" for i in range(10)}


@pytest.mark.parametrize(
    "listed, records, max_fraction, expect_prune, expect_forget, refused",
    [
        pytest.param(LISTED_ALL, {}, 0.5, {}, (), False, id="nothing gone"),
        pytest.param(LISTED_ALL - {"f1", "f2"}, {"d1": record(10), "d2": record(10)}, 0.5,
                     {"d1": 11, "d2": 11}, (), False, id="two files gone: tombstones one above the fence"),
        pytest.param(LISTED_ALL - {"f1"}, {"d1": record(20)}, 0.5, {}, ("d1",), False,
                     id="written since by the stream: not ours, forgotten"),
        pytest.param(LISTED_ALL - {"f1"}, {"d1": record(11, deleted=True)}, 0.5, {}, ("d1",), False,
                     id="deleted already"),
        pytest.param(LISTED_ALL - {"f1"}, {"d1": None}, 0.5, {}, ("d1",), False, id="no ledger record"),
        pytest.param(set(), {f"d{i}": record(10) for i in range(10)}, 0.5, {}, (), True,
                     id="an emptied source is refused"),
        pytest.param(LISTED_ALL - {"f0", "f1", "f2", "f3", "f4"}, {f"d{i}": record(10) for i in range(5)}, 0.5,
                     {f"d{i}": 11 for i in range(5)}, (), False, id="exactly the limit is allowed"),
        pytest.param(set(), {f"d{i}": record(10) for i in range(10)}, 1.0,
                     {f"d{i}": 11 for i in range(10)}, (), False, id="the limit raised to 1 allows all"),
    ],
)
def test_plan(listed, records, max_fraction, expect_prune, expect_forget, refused):
    plan = plan_prune(PROVENANCE, listed, everywhere, records, max_fraction)
    assert plan.prune == expect_prune
    assert plan.forget == expect_forget
    assert plan.refused is refused and plan.known == 10


def test_a_refusal_says_how_many_and_why():
    plan = plan_prune(PROVENANCE, {"f9", "f8"}, everywhere, {f"d{i}": record(10) for i in range(8)}, 0.5)
    assert plan.refused and plan.gone == 8 and plan.prune == {}
    assert "8 of 10 documents (80%)" in plan.message and "prune.maxFraction" in plan.message
    assert "nothing was removed" in plan.message


def test_each_shard_prunes_its_own_origins_only():
    in_shard = lambda origin: origin in {"f1", "f2", "f3", "f4"}  # noqa: E731
    plan = plan_prune(PROVENANCE, set(), in_shard, {f"d{i}": record(10) for i in (1, 2)}, 0.5)
    assert plan.known == 4 and plan.prune == {"d1": 11, "d2": 11}


def test_origin_is_the_listed_item_not_the_document():
    # Two documents of one file (a JSONL of records): the file is listed, so neither goes.
    provenance = {"r1": Provenance("all.jsonl", 5), "r2": Provenance("all.jsonl", 5)}
    plan = plan_prune(provenance, {"all.jsonl"}, everywhere, {}, 0.5)
    assert plan.prune == {} and plan.known == 2
