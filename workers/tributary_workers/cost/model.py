"""The cost model: plain arithmetic over named figures, each carrying where it came from.

Every number the model reads is a ``Figure`` (value, unit, source): a calibration measurement,
a user's flag, or a documented default. Every term it produces names the figures it used, so
``tributary cost`` can print each term next to its sources. No I/O here; see docs/cost.md for
the formulas in prose and tests/unit/test_cost_model.py for hand-computed cases.

A strategy is the share of documents sent through the nightly batch path (``batch_share``):
0 is pure streaming, the bulk fraction is hybrid, 1 batches everything. Documents not batched
are streamed: bulk uploads arrive as bursts (full stream batches), individual updates in
bursts of ``burst_size`` events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

HOUR = 3600.0
DAY_HOURS = 24.0


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str  # "calibration: <file>", "input: --flag" or "default: --flag"


@dataclass(frozen=True)
class Curve:
    """Embedding throughput (chunks/s) by batch size, for one device."""

    points: Mapping[int, float]
    source: str

    def at(self, batch: float) -> float:
        """Interpolated linearly in log2(batch size) between measured points, flat beyond them."""
        sizes = sorted(self.points)
        if not sizes:
            raise ValueError("no throughput measured")
        batch = max(1.0, batch)
        if batch <= sizes[0]:
            return self.points[sizes[0]]
        if batch >= sizes[-1]:
            return self.points[sizes[-1]]
        for low, high in zip(sizes, sizes[1:]):
            if low <= batch <= high:
                t = (math.log2(batch) - math.log2(low)) / (math.log2(high) - math.log2(low))
                return self.points[low] + t * (self.points[high] - self.points[low])
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Term:
    name: str
    per_day: float  # currency units per day
    quantity: float
    unit: str  # of the quantity, e.g. "worker-hours"
    uses: tuple[str, ...]  # names of the figures (and curves) it read


@dataclass
class StrategyCost:
    name: str
    batch_share: float
    terms: list[Term]
    notes: list[str] = field(default_factory=list)

    @property
    def total_per_day(self) -> float:
        return sum(term.per_day for term in self.terms)


# The figures the model reads, by name (docs/cost.md lists them with their meaning).
REQUIRED = (
    "docs_per_day", "bulk_fraction", "chunks_per_doc", "burst_size", "active_hours",
    "bulk_uploads_per_day", "min_replicas", "max_replicas", "scale_down_after_s", "batch_runs_per_day",
    "parallelism", "batch_embed_batch_size", "stream_max_batch_size", "stream_embed_batch_size",
    "compaction_rewrites", "worker_cores", "worker_memory_gb", "redis_memory_gb",
    "price_core_hour", "price_gpu_hour", "price_memory_gb_hour",
    "worker_start_s", "stream_upsert_cpu_s_per_chunk", "stream_upsert_wall_s_per_chunk",
    "batch_upsert_cpu_s_per_chunk", "bulk_insert_cpu_s_per_chunk", "index_build_cpu_s_per_chunk",
    "redis_queue_cpu_s_per_event", "redis_ledger_cpu_s_per_doc",
)


@dataclass(frozen=True)
class Inputs:
    figures: Mapping[str, Figure]
    stream_curve: Curve
    batch_curve: Curve
    stream_gpu: bool = False
    batch_gpu: bool = False

    def __post_init__(self):
        missing = [name for name in REQUIRED if name not in self.figures]
        if missing:
            raise ValueError(f"cost model inputs missing: {', '.join(missing)}")
        for name, figure in self.figures.items():
            if figure.value < 0 or math.isnan(figure.value):
                raise ValueError(f"{name} must not be negative, got {figure.value}")
        if self["bulk_fraction"] > 1:
            raise ValueError(f"bulk_fraction must be between 0 and 1, got {self['bulk_fraction']}")

    def __getitem__(self, name: str) -> float:
        return self.figures[name].value

    def worker_price_per_hour(self, gpu: bool) -> float:
        price = self["worker_cores"] * self["price_core_hour"] + self["worker_memory_gb"] * self["price_memory_gb_hour"]
        return price + (self["price_gpu_hour"] if gpu else 0.0)


WORKER_PRICE = ("worker_cores", "price_core_hour", "worker_memory_gb", "price_memory_gb_hour")


def _price_uses(gpu: bool) -> tuple[str, ...]:
    return WORKER_PRICE + (("price_gpu_hour",) if gpu else ())


def split_documents(docs: float, bulk_fraction: float, batch_share: float) -> tuple[float, float, float]:
    """(batched, streamed bulk, streamed individual) documents per day for a batch share."""
    batched = batch_share * docs
    streamed_bulk = max(0.0, bulk_fraction - batch_share) * docs
    return batched, streamed_bulk, max(0.0, docs - batched - streamed_bulk)


def cost_strategy(name: str, batch_share: float, x: Inputs) -> StrategyCost:
    if not 0 <= batch_share <= 1:
        raise ValueError(f"batch share of strategy {name!r} must be between 0 and 1, got {batch_share}")
    c = x["chunks_per_doc"]
    batched, streamed_bulk, streamed_updates = split_documents(x["docs_per_day"], x["bulk_fraction"], batch_share)
    stream_price, batch_price = x.worker_price_per_hour(x.stream_gpu), x.worker_price_per_hour(x.batch_gpu)
    curve_s, curve_b = "stream_curve", "batch_curve"
    terms: list[Term] = []
    notes: list[str] = []

    def add(term_name: str, quantity: float, unit: str, unit_price: float, *uses: str) -> None:
        terms.append(Term(term_name, quantity * unit_price, quantity, unit, tuple(dict.fromkeys(uses))))

    # -- stream workers: embedding (small batches), the write each batch waits for, idle capacity
    update_batch = min(min(x["burst_size"], x["stream_max_batch_size"]) * c, x["stream_embed_batch_size"])
    bulk_batch = min(x["stream_max_batch_size"] * c, x["stream_embed_batch_size"])
    streamed_chunks = (streamed_bulk + streamed_updates) * c
    embed_updates_h = streamed_updates * c / x.stream_curve.at(update_batch) / HOUR if streamed_updates else 0.0
    embed_bulk_h = streamed_bulk * c / x.stream_curve.at(bulk_batch) / HOUR if streamed_bulk else 0.0
    write_wait_h = streamed_chunks * x["stream_upsert_wall_s_per_chunk"] / HOUR
    wait_updates_h = streamed_updates * c * x["stream_upsert_wall_s_per_chunk"] / HOUR
    doc_uses = ("docs_per_day", "bulk_fraction", "chunks_per_doc")
    add("stream embedding, individual updates", embed_updates_h, "worker-hours", stream_price,
        *doc_uses, "burst_size", "stream_max_batch_size", "stream_embed_batch_size", curve_s, *_price_uses(x.stream_gpu))
    add("stream embedding, bulk uploads", embed_bulk_h, "worker-hours", stream_price,
        *doc_uses, "stream_max_batch_size", "stream_embed_batch_size", curve_s, *_price_uses(x.stream_gpu))
    add("stream workers waiting on upserts", write_wait_h, "worker-hours", stream_price,
        *doc_uses, "stream_upsert_wall_s_per_chunk", *_price_uses(x.stream_gpu))

    # Idle capacity: always-on replicas, or (scale to zero) the cooldown after each burst of updates.
    min_replicas, extra = x["min_replicas"], max(0.0, x["max_replicas"] - x["min_replicas"])
    bursts = streamed_updates / max(1.0, x["burst_size"])
    start_h, cooldown_h = x["worker_start_s"] / HOUR, x["scale_down_after_s"] / HOUR
    if min_replicas >= 1:
        # The always-on replicas do the updates' work and their share of a bulk burst, which is
        # spread over all max_replicas; the scaled-out replicas' share is billed on top.
        own_share = min_replicas / max(min_replicas, x["max_replicas"])
        absorbed_h = embed_updates_h + wait_updates_h + (embed_bulk_h + write_wait_h - wait_updates_h) * own_share
        idle_h = max(0.0, min_replicas * DAY_HOURS - absorbed_h)
        cold_starts = 0.0
        idle_uses = ("min_replicas", "max_replicas")
    elif bursts and x["active_hours"] > 0:
        # Poisson bursts over the active hours: a worker is up while a burst came within the
        # cooldown, P = 1 - exp(-rate * cooldown); a burst finding none up pays a cold start.
        rate = bursts / x["active_hours"]  # per hour
        up_fraction = 1.0 - math.exp(-rate * cooldown_h)
        idle_h = max(0.0, x["active_hours"] * up_fraction - embed_updates_h - wait_updates_h)
        cold_starts = bursts * (1.0 - up_fraction)
        idle_uses = ("min_replicas", "active_hours", "scale_down_after_s", "burst_size", *doc_uses)
        notes.append(f"{name}: with scale to zero, the first update of a quiet period waits a cold start "
                     f"({x['worker_start_s']:.0f} s)")
    else:
        idle_h, cold_starts, idle_uses = 0.0, 0.0, ("min_replicas",)
    add("stream workers idle (always on)" if min_replicas >= 1 else "stream workers idle (cooldown after updates)",
        idle_h, "worker-hours", stream_price, *idle_uses, *_price_uses(x.stream_gpu))
    # Bulk uploads through the stream scale out to max replicas: each extra one starts cold and
    # idles through the cooldown once the burst is drained.
    scale_outs = x["bulk_uploads_per_day"] if streamed_bulk else 0.0
    scaled = scale_outs * (extra if min_replicas >= 1 else max(1.0, x["max_replicas"]))
    add("stream cold starts", (cold_starts + scaled) * start_h, "worker-hours", stream_price,
        "worker_start_s", "max_replicas", "min_replicas", "bulk_uploads_per_day", *_price_uses(x.stream_gpu))
    add("stream scale-out cooldown", scaled * cooldown_h, "worker-hours", stream_price,
        "scale_down_after_s", "max_replicas", "bulk_uploads_per_day", *_price_uses(x.stream_gpu))

    # -- nightly batch workers: sized by parallelism, each pod pays one cold start per run
    batch_chunks = batched * c
    runs = x["batch_runs_per_day"] if batched else 0.0
    add("batch embedding", batch_chunks / x.batch_curve.at(x["batch_embed_batch_size"]) / HOUR if batched else 0.0,
        "worker-hours", batch_price, *doc_uses, "batch_embed_batch_size", curve_b, *_price_uses(x.batch_gpu))
    add("batch cold starts", runs * x["parallelism"] * start_h, "worker-hours", batch_price,
        "batch_runs_per_day", "parallelism", "worker_start_s", *_price_uses(x.batch_gpu))

    # -- Milvus: small upserts, then their index builds and compaction rewrites, vs large upserts
    rewrite = x["bulk_insert_cpu_s_per_chunk"] + x["index_build_cpu_s_per_chunk"]
    stream_write_s = streamed_chunks * (x["stream_upsert_cpu_s_per_chunk"] + x["index_build_cpu_s_per_chunk"]
                                        + x["compaction_rewrites"] * rewrite)
    batch_write_s = batch_chunks * (x["batch_upsert_cpu_s_per_chunk"] + x["index_build_cpu_s_per_chunk"])
    add("Milvus writes, streamed (small upserts, index, compaction)", stream_write_s / HOUR, "core-hours",
        x["price_core_hour"], *doc_uses, "stream_upsert_cpu_s_per_chunk", "index_build_cpu_s_per_chunk",
        "compaction_rewrites", "bulk_insert_cpu_s_per_chunk", "price_core_hour")
    add("Milvus writes, batched (large upserts, index)", batch_write_s / HOUR, "core-hours", x["price_core_hour"],
        *doc_uses, "batch_upsert_cpu_s_per_chunk", "index_build_cpu_s_per_chunk", "price_core_hour")

    # -- Redis: every streamed event through the queue, every document through the ledger
    redis_s = (streamed_bulk + streamed_updates) * x["redis_queue_cpu_s_per_event"] \
        + x["docs_per_day"] * x["redis_ledger_cpu_s_per_doc"]
    add("Redis queue and ledger operations", redis_s / HOUR, "core-hours", x["price_core_hour"],
        "docs_per_day", "bulk_fraction", "redis_queue_cpu_s_per_event", "redis_ledger_cpu_s_per_doc", "price_core_hour")
    add("Redis memory", x["redis_memory_gb"] * DAY_HOURS, "GB-hours", x["price_memory_gb_hour"],
        "redis_memory_gb", "price_memory_gb_hour")
    return StrategyCost(name, batch_share, terms, notes)


def compare(strategies: Mapping[str, float], x: Inputs) -> list[StrategyCost]:
    """Each strategy (name -> batch share) costed with the same inputs, in the given order."""
    return [cost_strategy(name, share, x) for name, share in strategies.items()]


def with_figure(x: Inputs, name: str, value: float, source: str = "sweep") -> Inputs:
    figures = dict(x.figures)
    figures[name] = Figure(value, figures[name].unit, source)
    return Inputs(figures, x.stream_curve, x.batch_curve, x.stream_gpu, x.batch_gpu)


def share_of(strategy: str | float, bulk_fraction: float) -> float:
    """A strategy's batch share: a number, or 'bulk' (the hybrid's: the bulk fraction)."""
    return bulk_fraction if strategy == "bulk" else float(strategy)


def break_even(strategies: Mapping[str, str | float], x: Inputs, volumes: list[float]) -> float | None:
    """The daily volume at which the first two strategies cost the same (bisection), or None."""
    first, second = list(strategies.items())[:2]

    def gap(docs: float) -> float:
        point = with_figure(x, "docs_per_day", docs)
        return (cost_strategy(first[0], share_of(first[1], x["bulk_fraction"]), point).total_per_day
                - cost_strategy(second[0], share_of(second[1], x["bulk_fraction"]), point).total_per_day)

    for low, high in zip(volumes, volumes[1:]):
        g_low, g_high = gap(low), gap(high)
        if g_low == 0:
            return low
        if (g_low < 0) != (g_high < 0):
            for _ in range(60):
                middle = (low + high) / 2
                if (gap(middle) < 0) == (g_low < 0):
                    low = middle
                else:
                    high = middle
            return (low + high) / 2
    return None


@dataclass(frozen=True)
class RunEstimate:
    """What one batch run is expected to take: wall time and worker-hours, from the same figures."""

    chunks: float
    wall_s: float
    worker_hours: float
    milvus_core_hours: float
    cost: float


def estimate_run(chunks: float, parallelism: int, throughput: float, worker_start_s: float,
                 write_cpu_s_per_chunk: float, index_build_s_per_chunk: float, worker_price_per_hour: float,
                 price_core_hour: float, deferred_index: bool) -> RunEstimate:
    """A sharded batch run: every pod starts cold, then embeds its share (writes overlap embedding);
    an initial load builds its index once at the end, after the last shard."""
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")
    compute_s = chunks / throughput if chunks else 0.0
    index_s = chunks * index_build_s_per_chunk
    wall = (worker_start_s + compute_s / parallelism + (index_s if deferred_index else 0.0)) if chunks else 0.0
    worker_h = (parallelism * worker_start_s + compute_s) / HOUR if chunks else 0.0
    milvus_h = chunks * (write_cpu_s_per_chunk + index_build_s_per_chunk) / HOUR
    return RunEstimate(chunks, wall, worker_h, milvus_h, worker_h * worker_price_per_hour + milvus_h * price_core_hour)
