"""Calibration: the rates the cost model needs, measured on the machine it runs on, in one run.

- embedding throughput (chunks/s) at the batch path's batch size and at small streaming batches,
  on the CPU and, when one is present, on the GPU (the real Embedder, full-length chunks);
- Milvus write cost per chunk, as server CPU seconds: small streaming upserts into an indexed,
  loaded collection; the batch path's upserts; a bulk load, and its deferred index build;
- Redis CPU per streamed event (add, group read, ack) and per ledger decide + commit;
- a streaming worker's cold start (process start to consuming) and idle footprint (CPU, memory).

The servers and the idle worker's command are given by the caller (the CLI starts them), so this
module knows no entry point. The result is a ``Calibration`` saved as JSON with the machine,
versions and date; the project ships its reference machine's file as the default.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from tributary_workers.contract import defaults
from tributary_workers.cost import footprint
from tributary_workers.documents import Chunk, Document
from tributary_workers.ledger import RedisLedger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
from tributary_workers.pipeline.writer import MilvusWriter, WriterConfig

SCHEMA = 1
DEFAULT_FILE = "reference_calibration.json"
STREAM_BATCH_SIZES = (1, 4, 16)
STREAM_ROWS_PER_REQUEST = 4  # a lone streamed update of a four-chunk document
WORDS = ("river delta sediment current estuary basin channel flood meander tributary watershed spring "
         "glacier valley canyon rapids lake wetland aquifer drought rainfall erosion bank bridge").split()


class CalibrationError(ValueError):
    """A calibration file that cannot be used; fatal, one line."""


@dataclass
class Calibration:
    label: str
    measured_at: str
    machine: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    embedding: dict[str, dict[str, Any]]  # device -> {"threads", "chunks_per_s": {batch: rate}}
    milvus: dict[str, Any]
    redis: dict[str, Any]
    worker: dict[str, Any]
    sample: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "calibration") -> Calibration:
        try:
            raw = json.loads(text)
            if raw.get("schema") != SCHEMA:
                raise CalibrationError(f"{where}: schema {raw.get('schema')!r} is not {SCHEMA}")
            calibration = cls(**raw)
            for device in calibration.embedding.values():
                device["chunks_per_s"] = {int(k): float(v) for k, v in device["chunks_per_s"].items()}
            return calibration
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as exc:
            if isinstance(exc, CalibrationError):
                raise
            raise CalibrationError(f"{where} is not a tributary calibration file: {exc}") from None

    def throughput(self, device: str) -> dict[int, float]:
        if device not in self.embedding:
            raise CalibrationError(f"calibration {self.label!r} has no {device} figures "
                                   f"(measured: {', '.join(self.embedding)})")
        return self.embedding[device]["chunks_per_s"]


def load(path: str | Path | None) -> tuple[Calibration, str]:
    """A calibration file, or the shipped reference calibration; with a label for sources."""
    if path is None:
        text = resources.files("tributary_workers.cost").joinpath(DEFAULT_FILE).read_text()
        calibration = Calibration.from_json(text, "the shipped calibration")
        return calibration, f"calibration: shipped reference ({calibration.measured_at[:10]})"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration {path}: {exc.strerror or exc}") from None
    calibration = Calibration.from_json(text, str(path))
    return calibration, f"calibration: {path} ({calibration.measured_at[:10]})"


@dataclass(frozen=True)
class CalibratorConfig:
    milvus_uri: str
    milvus_pid: int | None  # the server process, for its CPU time; None: client wall time only
    redis_url: str
    redis_pid: int | None
    worker_argv: Sequence[str] = ()  # an idle streaming worker; empty: no footprint measured
    worker_ready_marker: str = "consuming"
    label: str = ""
    model: str | None = None
    devices: Sequence[str] = ()  # empty: cpu, and cuda when present
    stream_batch_sizes: Sequence[int] = STREAM_BATCH_SIZES
    batch_size: int = defaults.BATCH_EMBED_BATCH_SIZE
    sample_chunks: int = 128  # texts embedded per batch size and round (at least one full batch)
    rounds: int = 3
    milvus_chunks: int = 2048  # rows written per write mode
    redis_events: int = 2000
    idle_seconds: float = 20.0
    worker_timeout_s: float = 180.0


class Calibrator:
    def __init__(self, config: CalibratorConfig):
        self.config = config
        self.embedder: Embedder | None = None
        self.texts: list[str] = []

    def warm_up(self) -> None:
        self.embedder = Embedder(EmbedderConfig(model=self.config.model, device="cpu"))
        self.embedder.warm_up()
        chunker = Chunker.for_model_path(self.embedder.model_path, ChunkerConfig(), self.embedder.max_seq_length)
        text = " ".join(WORDS[(i * i + 7 * i) % len(WORDS)] for i in range(40 * self.embedder.max_seq_length))
        chunks = chunker.run(Document("calibration", 1, text))
        self.texts = [c.text for c in chunks[:-1]] or [chunks[0].text]  # full-length chunks only
        self.tokens_per_chunk = sum(c.token_count for c in chunks[:len(self.texts)]) / len(self.texts)

    def run(self) -> Calibration:
        if self.embedder is None:
            self.warm_up()
        cfg = self.config
        load_before = os.getloadavg()[0]  # the machine may be shared: the figures say how busy it was
        embedding = {device: self._embedding(device) for device in self._devices()}
        milvus = self._milvus()
        redis_figures = self._redis()
        worker = self._worker()
        worker["peak_rss_gb"] = round(footprint.peak_rss_bytes_of_self() / 2**30, 3)
        return Calibration(
            label=cfg.label or f"{platform.node()} ({_machine_summary()})",
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            machine=_machine(), versions=_versions(),
            model={"id": self.embedder.model_id, "dimension": self.embedder.dimension,
                   "tokens_per_chunk": round(self.tokens_per_chunk, 1)},
            embedding=embedding, milvus=milvus, redis=redis_figures, worker=worker,
            sample={"sample_chunks": cfg.sample_chunks, "rounds": cfg.rounds, "milvus_chunks": cfg.milvus_chunks,
                    "redis_events": cfg.redis_events, "idle_seconds": cfg.idle_seconds,
                    "batch_path_batch_size": cfg.batch_size,
                    "stream_rows_per_request": STREAM_ROWS_PER_REQUEST,
                    "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        )

    # -- embedding -------------------------------------------------------------------------------

    def _devices(self) -> list[str]:
        if self.config.devices:
            return list(self.config.devices)
        import torch

        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    def _embedding(self, device: str) -> dict[str, Any]:
        """Rounds alternate over the batch sizes and the best round counts: on a shared machine
        other load only ever slows a round down, so the fastest is the closest to capacity."""
        import torch

        sizes = sorted({*self.config.stream_batch_sizes, self.config.batch_size})
        embedders = {size: Embedder(EmbedderConfig(model=self.config.model, batch_size=size, device=device))
                     for size in sizes}
        rounds: dict[int, list[float]] = {size: [] for size in sizes}
        for _ in range(self.config.rounds):
            for size, embedder in embedders.items():
                embedder.warm_up()
                count = max(self.config.sample_chunks, size)
                texts = [self.texts[i % len(self.texts)] for i in range(count)]
                embedder.run(texts[:size])  # first call at this shape: allocator and kernels warm
                started = time.perf_counter()
                for start in range(0, count, size):
                    embedder.run(texts[start:start + size])
                rounds[size].append(round(count / (time.perf_counter() - started), 2))
        threads = torch.get_num_threads() if device == "cpu" else None
        return {"threads": threads, "chunks_per_s": {size: max(r) for size, r in rounds.items()},
                "rounds": {str(size): r for size, r in rounds.items()}}

    # -- Milvus ----------------------------------------------------------------------------------

    def _writer(self, bulk: bool) -> MilvusWriter:
        writer = MilvusWriter(WriterConfig(
            uri=self.config.milvus_uri, collection=f"calibration_{uuid.uuid4().hex[:10]}",
            model_id=self.embedder.model_id, dimension=self.embedder.dimension, bulk_load=bulk,
            bulk_load_run="calibration"))
        writer.warm_up()
        return writer

    def _rows(self, writer: MilvusWriter, start: int, count: int, chunks_per_doc: int) -> tuple[list, list[str]]:
        rng = np.random.default_rng(start)
        vectors = rng.standard_normal((count, self.embedder.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [Chunk(f"doc-{(start + i) // chunks_per_doc}", 2, (start + i) % chunks_per_doc,
                        self.texts[(start + i) % len(self.texts)], 0) for i in range(count)]
        rows = writer.rows(chunks, vectors, "0" * 64, {"source": "calibration"})
        docs = sorted({c.doc_id for c in chunks})
        return rows, [MilvusWriter.older_than(doc, 2) for doc in docs]

    def _write_mode(self, bulk: bool, rows_per_request: int) -> dict[str, float]:
        """Write like the indexer does: upsert a group's rows, then delete its older versions."""
        writer = self._writer(bulk)
        try:
            total = self.config.milvus_chunks
            cpu0, wall0 = self._milvus_cpu(), time.perf_counter()
            for start in range(0, total, rows_per_request):
                rows, cleanup = self._rows(writer, start, min(rows_per_request, total - start), rows_per_request)
                writer.run(rows)
                writer.delete_where(cleanup)
            figures = {"cpu_s_per_chunk": (self._milvus_cpu() - cpu0) / total,
                       "wall_s_per_chunk": (time.perf_counter() - wall0) / total}
            if bulk:
                cpu0, wall0 = self._milvus_cpu(), time.perf_counter()
                writer.finish_bulk_load()
                figures["index_cpu_s_per_chunk"] = (self._milvus_cpu() - cpu0) / total
                figures["index_wall_s_per_chunk"] = (time.perf_counter() - wall0) / total
            writer.client.drop_collection(writer.config.collection)
            return figures
        finally:
            writer.close()

    def _milvus_cpu(self) -> float:
        return footprint.cpu_seconds(self.config.milvus_pid) if self.config.milvus_pid else 0.0

    def _milvus(self) -> dict[str, Any]:
        stream = self._write_mode(bulk=False, rows_per_request=STREAM_ROWS_PER_REQUEST)
        batch = self._write_mode(bulk=False, rows_per_request=self.config.batch_size)
        bulk = self._write_mode(bulk=True, rows_per_request=self.config.batch_size)
        measured = "server CPU" if self.config.milvus_pid else "client wall time (no server pid)"
        # Server CPU when known; otherwise the client's wall time stands in for it.
        key = "cpu_s_per_chunk" if self.config.milvus_pid else "wall_s_per_chunk"
        index_key = "index_cpu_s_per_chunk" if self.config.milvus_pid else "index_wall_s_per_chunk"
        return {
            "server": "milvus-lite server", "measured": measured,
            "chunks": self.config.milvus_chunks,
            "stream_upsert_cpu_s_per_chunk": _sig(stream[key]), "stream_upsert_wall_s_per_chunk": _sig(stream["wall_s_per_chunk"]),
            "batch_upsert_cpu_s_per_chunk": _sig(batch[key]), "batch_upsert_wall_s_per_chunk": _sig(batch["wall_s_per_chunk"]),
            "bulk_insert_cpu_s_per_chunk": _sig(bulk[key]), "bulk_insert_wall_s_per_chunk": _sig(bulk["wall_s_per_chunk"]),
            "index_build_cpu_s_per_chunk": _sig(bulk[index_key]),
            "index_build_wall_s_per_chunk": _sig(bulk["index_wall_s_per_chunk"]),
        }

    # -- Redis -----------------------------------------------------------------------------------

    def _redis_cpu(self) -> float:
        return footprint.cpu_seconds(self.config.redis_pid) if self.config.redis_pid else 0.0

    def _redis(self) -> dict[str, Any]:
        from tributary_workers.ledger.connect import redis_client

        client = redis_client(self.config.redis_url)
        n, stream, group = self.config.redis_events, f"calibration:{uuid.uuid4().hex[:8]}", "calibration"
        payload = json.dumps({"op": "upsert", "doc_id": "d", "version": 1, "content": self.texts[0]})
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
            cpu0, wall0 = self._redis_cpu(), time.perf_counter()
            for i in range(n):
                client.xadd(stream, {"event": payload})
            done = 0
            while done < n:
                batch = client.xreadgroup(group, "c", {stream: ">"}, count=defaults.MAX_BATCH_SIZE)
                ids = [entry_id for _, entries in batch for entry_id, _ in entries]
                client.xack(stream, group, *ids)
                done += len(ids)
            queue_cpu, queue_wall = self._redis_cpu() - cpu0, time.perf_counter() - wall0
            ledger = RedisLedger(client, namespace=stream)
            cpu0 = self._redis_cpu()
            for i in range(n):
                ledger.decide(f"doc-{i}", 1, "h")
                ledger.commit(f"doc-{i}", 1, "h", "calibration", 4)
            ledger_cpu = self._redis_cpu() - cpu0
            client.delete(stream, *client.scan_iter(match=f"*{{{stream}}}*", count=1000))
        finally:
            client.close()
        return {"events": n, "measured": "server CPU" if self.config.redis_pid else "unmeasured (no server pid)",
                "queue_cpu_s_per_event": _sig(queue_cpu / n), "queue_wall_s_per_event": _sig(queue_wall / n),
                "ledger_cpu_s_per_doc": _sig(ledger_cpu / n)}

    # -- the idle worker -------------------------------------------------------------------------

    def _worker(self) -> dict[str, Any]:
        cfg = self.config
        if not cfg.worker_argv:
            return {"start_s": None, "idle_cpu_cores": None, "idle_rss_gb": None}
        started = time.perf_counter()
        proc = subprocess.Popen(list(cfg.worker_argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        ready = threading.Event()
        tail: list[str] = []

        def watch() -> None:
            for line in proc.stderr:
                tail.append(line.rstrip())
                del tail[:-5]
                if cfg.worker_ready_marker in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        try:
            if not ready.wait(cfg.worker_timeout_s) or proc.poll() is not None:
                raise RuntimeError(f"the idle worker did not start within {cfg.worker_timeout_s:.0f}s: "
                                   + (tail[-1] if tail else f"exit {proc.poll()}"))
            start_s = time.perf_counter() - started
            cpu0, wall0 = footprint.cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(cfg.idle_seconds)  # the measurement window itself
            idle_cpu = (footprint.cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - wall0)
            rss = footprint.rss_bytes(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {"start_s": round(start_s, 2), "idle_cpu_cores": round(idle_cpu, 4), "idle_rss_gb": round(rss / 2**30, 3)}


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def _machine_summary() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}"


def _machine() -> dict[str, Any]:
    import torch

    cpu_model, memory_gb = None, None
    try:
        cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), None)
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory_gb = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {"arch": platform.machine(), "cpus": os.cpu_count(), "cpu_model": cpu_model, "memory_gb": memory_gb,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "os": f"{platform.system()} {platform.release()}", "hostname": platform.node()}


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("tributary", "torch", "sentence-transformers", "pymilvus", "milvus-lite", "redis"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "unknown"
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        found["redis-server"] = next((w.removeprefix("v=") for w in out.split() if w.startswith("v=")), "unknown")
    except (OSError, subprocess.TimeoutExpired):
        found["redis-server"] = "unknown"
    return found
