"""The cost model's arithmetic against hand-computed cases (docs/cost.md has the formulas)."""

from __future__ import annotations

import math

import pytest
from tributary_workers.cost.model import (
    Curve,
    Figure,
    Inputs,
    break_even,
    compare,
    cost_strategy,
    estimate_run,
    split_documents,
    with_figure,
)
from tributary_workers.cost.planning import chunks_for_tokens, sample_indexes

H = 3600.0
CURVE = Curve({1: 10.0, 4: 20.0, 16: 40.0, 64: 80.0}, "test")
# Round numbers, so every expected value below is worked out by hand.
BASE = {
    "docs_per_day": 1000, "bulk_fraction": 0.5, "chunks_per_doc": 2, "burst_size": 1, "active_hours": 24,
    "bulk_uploads_per_day": 1, "min_replicas": 1, "max_replicas": 3, "scale_down_after_s": 360,
    "batch_runs_per_day": 1, "parallelism": 2, "batch_embed_batch_size": 64, "stream_max_batch_size": 32,
    "stream_embed_batch_size": 64, "compaction_rewrites": 1, "worker_cores": 2, "worker_memory_gb": 1,
    "redis_memory_gb": 1, "price_core_hour": 0.05, "price_gpu_hour": 1.0, "price_memory_gb_hour": 0.01,
    "worker_start_s": 36, "stream_upsert_cpu_s_per_chunk": 0.002, "stream_upsert_wall_s_per_chunk": 0.001,
    "batch_upsert_cpu_s_per_chunk": 0.001, "bulk_insert_cpu_s_per_chunk": 0.0005,
    "index_build_cpu_s_per_chunk": 0.0005, "redis_queue_cpu_s_per_event": 0.0001, "redis_ledger_cpu_s_per_doc": 0.0002,
}
WORKER = 2 * 0.05 + 1 * 0.01  # $/worker-hour: two cores and one GB


def inputs(**changes) -> Inputs:
    values = {**BASE, **changes}
    return Inputs({k: Figure(float(v), "u", "test") for k, v in values.items()}, CURVE, CURVE)


def terms(result) -> dict[str, float]:
    return {t.name: t.per_day for t in result.terms}


@pytest.mark.parametrize("batch, expected", [
    (1, 10.0), (4, 20.0), (64, 80.0),  # measured points
    (2, 15.0), (8, 30.0), (32, 60.0),  # halfway in log2 between neighbours
    (0.5, 10.0), (128, 80.0),  # flat beyond the measured range
])
def test_throughput_curve(batch, expected):
    assert CURVE.at(batch) == pytest.approx(expected)


@pytest.mark.parametrize("bulk, share, expected", [
    (0.9, 0.0, (0, 900, 100)),  # pure streaming: bulk uploads go through the stream
    (0.9, 0.9, (900, 0, 100)),  # hybrid
    (0.9, 1.0, (1000, 0, 0)),  # everything nightly
    (0.5, 0.2, (200, 300, 500)),
    (0.0, 0.0, (0, 0, 1000)),
    (1.0, 1.0, (1000, 0, 0)),
])
def test_split_documents(bulk, share, expected):
    assert split_documents(1000, bulk, share) == pytest.approx(expected)


def test_pure_streaming_by_hand():
    result = cost_strategy("pure_streaming", 0.0, inputs())
    t = terms(result)
    # 500 updates x 2 chunks, one document per call: batch 2 -> 15 chunks/s.
    updates_h = 1000 / 15 / H
    bulk_h = 1000 / 80 / H  # 500 bulk documents, full batches of 64 chunks
    wait_h = 2000 * 0.001 / H
    assert t["stream embedding, individual updates"] == pytest.approx(updates_h * WORKER)
    assert t["stream embedding, bulk uploads"] == pytest.approx(bulk_h * WORKER)
    assert t["stream workers waiting on upserts"] == pytest.approx(wait_h * WORKER)
    # The always-on replica does the updates and a third of the burst (scaled out to 3 replicas).
    absorbed = updates_h + wait_h / 2 + (bulk_h + wait_h / 2) / 3
    assert t["stream workers idle (always on)"] == pytest.approx((24 - absorbed) * WORKER)
    assert t["stream cold starts"] == pytest.approx(2 * 0.01 * WORKER)  # scale out 1 -> 3, 36 s each
    assert t["stream scale-out cooldown"] == pytest.approx(2 * 0.1 * WORKER)
    assert t["batch embedding"] == 0 and t["batch cold starts"] == 0
    assert t["Milvus writes, streamed (small upserts, index, compaction)"] == pytest.approx(
        2000 * (0.002 + 0.0005 + 1 * (0.0005 + 0.0005)) / H * 0.05)
    assert t["Milvus writes, batched (large upserts, index)"] == 0
    assert t["Redis queue and ledger operations"] == pytest.approx((1000 * 0.0001 + 1000 * 0.0002) / H * 0.05)
    assert t["Redis memory"] == pytest.approx(24 * 0.01)
    expected_total = (24 + (bulk_h + wait_h / 2) * 2 / 3 + 0.02 + 0.2) * WORKER + 7 / H * 0.05 + 0.3 / H * 0.05 + 0.24
    assert result.total_per_day == pytest.approx(expected_total)


def test_hybrid_by_hand():
    t = terms(cost_strategy("hybrid", 0.5, inputs()))
    updates_h, wait_h = 1000 / 15 / H, 1000 * 0.001 / H
    assert t["stream embedding, bulk uploads"] == 0
    assert t["stream workers idle (always on)"] == pytest.approx((24 - updates_h - wait_h) * WORKER)
    assert t["stream cold starts"] == 0 and t["stream scale-out cooldown"] == 0  # nothing bursts the stream
    assert t["batch embedding"] == pytest.approx(1000 / 80 / H * WORKER)
    assert t["batch cold starts"] == pytest.approx(1 * 2 * 0.01 * WORKER)  # one run, two pods
    assert t["Milvus writes, streamed (small upserts, index, compaction)"] == pytest.approx(1000 * 0.0035 / H * 0.05)
    assert t["Milvus writes, batched (large upserts, index)"] == pytest.approx(1000 * 0.0015 / H * 0.05)
    assert t["Redis queue and ledger operations"] == pytest.approx((500 * 0.0001 + 1000 * 0.0002) / H * 0.05)


def test_no_bulk_makes_hybrid_pure_streaming():
    x = inputs(bulk_fraction=0.0)
    first, second = compare({"pure_streaming": 0.0, "hybrid": 0.0}, x)
    assert terms(first) == terms(second)


def test_all_bulk_hybrid_streams_nothing():
    t = terms(cost_strategy("hybrid", 1.0, inputs(bulk_fraction=1.0)))
    assert t["stream embedding, individual updates"] == t["stream embedding, bulk uploads"] == 0
    assert t["stream workers idle (always on)"] == pytest.approx(24 * WORKER)  # min replicas still run
    assert t["Redis queue and ledger operations"] == pytest.approx(1000 * 0.0002 / H * 0.05)  # ledger only
    assert t["batch embedding"] == pytest.approx(2000 / 80 / H * WORKER)


def test_zero_documents_cost_only_the_fixed_floor():
    for share in (0.0, 0.5):
        result = cost_strategy("s", share, inputs(docs_per_day=0))
        variable = {k: v for k, v in terms(result).items()
                    if k not in ("stream workers idle (always on)", "Redis memory")}
        assert all(v == 0 for v in variable.values()), variable
        assert result.total_per_day == pytest.approx(24 * WORKER + 0.24)


def test_scale_to_zero_by_hand():
    t = terms(cost_strategy("hybrid", 0.5, inputs(min_replicas=0)))
    rate = 500 / 24  # bursts an hour
    up = 1 - math.exp(-rate * 0.1)  # P(a burst within the 0.1 h cooldown)
    assert t["stream workers idle (cooldown after updates)"] == pytest.approx(
        (24 * up - 1000 / 15 / H - 1000 * 0.001 / H) * WORKER)
    assert t["stream cold starts"] == pytest.approx(500 * (1 - up) * 0.01 * WORKER)


def test_gpu_adds_its_price_per_worker_hour():
    x = inputs()
    gpu = Inputs(x.figures, CURVE, CURVE, stream_gpu=True, batch_gpu=False)
    t_cpu, t_gpu = terms(cost_strategy("s", 0.0, x)), terms(cost_strategy("s", 0.0, gpu))
    idle = "stream workers idle (always on)"
    assert t_gpu[idle] / t_cpu[idle] == pytest.approx((WORKER + 1.0) / WORKER)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        inputs(docs_per_day=-1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        inputs(bulk_fraction=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        cost_strategy("s", 1.2, inputs())
    with pytest.raises(ValueError, match="missing"):
        Inputs({"docs_per_day": Figure(1, "u", "t")}, CURVE, CURVE)


def test_break_even_is_where_the_totals_meet():
    x = inputs()
    strategies = {"pure_streaming": 0.0, "hybrid": "bulk"}
    volumes = [10.0 * 2**i for i in range(20)]
    even = break_even(strategies, x, volumes)
    assert even is not None
    at = with_figure(x, "docs_per_day", even)
    assert cost_strategy("a", 0.0, at).total_per_day == pytest.approx(cost_strategy("b", 0.5, at).total_per_day,
                                                                      abs=1e-9)
    assert break_even({"a": 0.0, "b": 0.0}, x, volumes) in (None, volumes[0])  # identical: never cross


def test_estimate_run_by_hand():
    run = estimate_run(chunks=8000, parallelism=4, throughput=20, worker_start_s=30, write_cpu_s_per_chunk=0.001,
                       index_build_s_per_chunk=0.0005, worker_price_per_hour=0.36, price_core_hour=0.05,
                       deferred_index=True)
    assert run.wall_s == pytest.approx(30 + 400 / 4 + 4)  # cold start, a quarter of 400 s, then the index
    assert run.worker_hours == pytest.approx((4 * 30 + 400) / H)
    assert run.milvus_core_hours == pytest.approx(12 / H)
    assert run.cost == pytest.approx(520 / H * 0.36 + 12 / H * 0.05)
    empty = estimate_run(0, 4, 20, 30, 0.001, 0.0005, 0.36, 0.05, False)
    assert (empty.wall_s, empty.cost) == (0, 0)


@pytest.mark.parametrize("tokens, expected", [(0, 0), (1, 1), (254, 1), (255, 2), (476, 2), (477, 3), (1000, 5)])
def test_chunks_for_tokens(tokens, expected):
    assert chunks_for_tokens(tokens, max_tokens=254, overlap_tokens=32) == expected


@pytest.mark.parametrize("count, size, expected", [
    (3, 5, [0, 1, 2]), (10, 2, [0, 9]), (11, 3, [0, 5, 10]), (0, 5, []), (5, 1, [0]),
])
def test_sample_indexes(count, size, expected):
    assert sample_indexes(count, size) == expected
