"""The cost model's user inputs (one flag each, with a documented default) and its calibration figures.

Prices are inputs, never facts: the defaults are round numbers in the range of on-demand cloud
list prices, there to be replaced with your own (docs/cost.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tributary_workers.contract import defaults
from tributary_workers.cost.calibration import Calibration, CalibrationError
from tributary_workers.cost.model import Curve, Figure, Inputs


@dataclass(frozen=True)
class UserInput:
    name: str
    default: float | None  # None: taken from the calibration
    unit: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.removeprefix("price_").replace("_", "-")


USER_INPUTS = (
    UserInput("docs_per_day", 10_000, "documents/day", "documents ingested per day"),
    UserInput("bulk_fraction", 0.9, "fraction", "share of documents arriving in bulk uploads (0-1)"),
    UserInput("chunks_per_doc", 4.0, "chunks/document", "mean chunks per document (or measure it with --corpus)"),
    UserInput("burst_size", 1, "events", "individual updates arriving together (burstiness; 1 = one at a time)"),
    UserInput("active_hours", 24, "hours/day", "hours a day in which individual updates arrive"),
    UserInput("bulk_uploads_per_day", 1, "uploads/day", "bulk uploads a day (each a burst when streamed)"),
    UserInput("min_replicas", 1, "replicas", "stream workers always running (0 = scale to zero)"),
    UserInput("max_replicas", 4, "replicas", "stream workers a bulk burst scales out to"),
    UserInput("scale_down_after_s", 300, "s", "seconds an idle stream worker stays up before scaling down"),
    UserInput("batch_runs_per_day", 1, "runs/day", "scheduled batch runs a day (nightly: 1)"),
    UserInput("parallelism", defaults.PARALLELISM, "pods", "batch worker pods per run (IngestionJob parallelism)"),
    UserInput("batch_embed_batch_size", defaults.BATCH_EMBED_BATCH_SIZE, "chunks", "chunks per model call, batch path"),
    UserInput("stream_max_batch_size", defaults.MAX_BATCH_SIZE, "events", "events per stream batch"),
    UserInput("stream_embed_batch_size", defaults.STREAM_EMBED_BATCH_SIZE, "chunks", "chunks per model call, stream path"),
    UserInput("compaction_rewrites", 1.0, "rewrites/chunk",
              "times segment compaction rewrites and re-indexes a streamed chunk (an assumption)"),
    UserInput("worker_cores", None, "cores", "cores a worker reserves (default: the calibration's torch threads)"),
    UserInput("worker_memory_gb", None, "GB", "memory a worker reserves (default: the calibration's peak RSS)"),
    UserInput("redis_memory_gb", 1.0, "GB", "memory of the Redis instance (same in every strategy)"),
    UserInput("price_core_hour", 0.04, "$/core-hour", "price of one core for an hour"),
    UserInput("price_gpu_hour", 2.50, "$/GPU-hour", "price of one GPU for an hour (on top of its host's cores)"),
    UserInput("price_memory_gb_hour", 0.005, "$/GB-hour", "price of one GB of memory for an hour"),
)

# Calibration figure -> (section, key, unit).
CALIBRATED = {
    "worker_start_s": ("worker", "start_s", "s"),
    "stream_upsert_cpu_s_per_chunk": ("milvus", "stream_upsert_cpu_s_per_chunk", "core-s/chunk"),
    "stream_upsert_wall_s_per_chunk": ("milvus", "stream_upsert_wall_s_per_chunk", "s/chunk"),
    "batch_upsert_cpu_s_per_chunk": ("milvus", "batch_upsert_cpu_s_per_chunk", "core-s/chunk"),
    "bulk_insert_cpu_s_per_chunk": ("milvus", "bulk_insert_cpu_s_per_chunk", "core-s/chunk"),
    "index_build_cpu_s_per_chunk": ("milvus", "index_build_cpu_s_per_chunk", "core-s/chunk"),
    "redis_queue_cpu_s_per_event": ("redis", "queue_cpu_s_per_event", "core-s/event"),
    "redis_ledger_cpu_s_per_doc": ("redis", "ledger_cpu_s_per_doc", "core-s/document"),
}


def parse_curve(text: str) -> dict[int, float]:
    """'1=150,64=4000' -> {1: 150.0, 64: 4000.0} (chunks/s by batch size)."""
    points: dict[int, float] = {}
    for part in text.split(","):
        size, _, rate = part.partition("=")
        try:
            points[int(size)] = float(rate)
        except ValueError:
            raise ValueError(f"not BATCH=CHUNKS_PER_S pairs: {text!r}") from None
        if points[int(size)] <= 0 or int(size) < 1:
            raise ValueError(f"batch sizes and rates must be positive: {text!r}")
    return points


def device_curve(calibration: Calibration, source: str, gpu: bool, gpu_points: Mapping[int, float] | None) -> Curve:
    if not gpu:
        return Curve(calibration.throughput("cpu"), f"{source}, cpu")
    if gpu_points:
        return Curve(dict(gpu_points), "input: --gpu-throughput")
    if "cuda" in calibration.embedding:
        return Curve(calibration.throughput("cuda"), f"{source}, cuda")
    raise CalibrationError("the calibration has no GPU figures (it was measured without a GPU): "
                           "calibrate on a GPU machine, or give --gpu-throughput BATCH=RATE,...")


def build_inputs(values: Mapping[str, float | None], calibration: Calibration, source: str, *,
                 stream_gpu: bool = False, batch_gpu: bool = False,
                 gpu_points: Mapping[int, float] | None = None,
                 overridden: Mapping[str, str] | None = None) -> Inputs:
    """Figures for the model: each user input as given (or its default), each calibration figure.

    ``overridden`` names the inputs given on the command line (name -> how), for their source.
    """
    overridden = overridden or {}
    figures: dict[str, Figure] = {}
    fallback = {"worker_cores": float(calibration.embedding["cpu"].get("threads") or calibration.machine["cpus"]),
                "worker_memory_gb": float(max(calibration.worker.get("peak_rss_gb") or 0,
                                              calibration.worker.get("idle_rss_gb") or 0))}
    for spec in USER_INPUTS:
        value = values.get(spec.name)
        if value is not None:
            figures[spec.name] = Figure(float(value), spec.unit, overridden.get(spec.name, f"input: {spec.flag}"))
        elif spec.default is not None:
            figures[spec.name] = Figure(float(spec.default), spec.unit, f"default: {spec.flag}")
        else:
            section = "embedding.cpu.threads" if spec.name == "worker_cores" else "worker.peak_rss_gb"
            figures[spec.name] = Figure(fallback[spec.name], spec.unit, f"{source}, {section}")
    for name, (section, key, unit) in CALIBRATED.items():
        value = getattr(calibration, section).get(key)
        if value is None:
            raise CalibrationError(f"the calibration lacks {section}.{key}")
        figures[name] = Figure(float(value), unit, f"{source}, {section}.{key}")
    return Inputs(figures, device_curve(calibration, source, stream_gpu, gpu_points),
                  device_curve(calibration, source, batch_gpu, gpu_points), stream_gpu, batch_gpu)
