"""The batch worker: one shard of a source, throughput first, checkpointed.

Three stages run on their own threads so the model is never idle waiting for I/O:

    loaders (max_concurrency threads)  read + parse + ledger decide + chunk, one source ref each
    embedder (1 thread)                gathers chunks of many documents into embed_batch_size calls
                                       (more on a GPU fed directly: Embedder.call_size)
    writer (1 thread)                  upserts rows, commits the ledger, records progress

Queues between them are bounded, so memory stays flat however large the source is.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from tributary_workers import metrics
from tributary_workers.batch.checkpoint import WatermarkTracker, open_checkpoint_store
from tributary_workers.batch.prune import DEFAULT_MAX_FRACTION, plan_prune
from tributary_workers.batch.report import Report
from tributary_workers.contract import defaults, keys
from tributary_workers.contract.checkpoints import CheckpointState
from tributary_workers.documents import Document, DocumentError, DocumentRef
from tributary_workers.ledger import Provenance, open_ledger
from tributary_workers.pipeline.chunker import Chunker
from tributary_workers.pipeline.embedder import Embedder
from tributary_workers.pipeline.indexer import (
    DocResult,
    DocumentIndexer,
    PreparedDoc,
    Status,
)
from tributary_workers.pipeline.parsers import Parser
from tributary_workers.pipeline.settings import PipelineSettings
from tributary_workers.pipeline.sources import open_source
from tributary_workers.pipeline.writer import MilvusWriter

_DONE = object()
log = logging.getLogger(__name__)


def shard_of(doc_id: str, shard_count: int) -> int:
    """Stable shard of a document: the same on every machine and Python version."""
    digest = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


def newest_per_doc_id(documents: Sequence[Document], results: list[DocResult]) -> list[Document]:
    """One file may hold several records of one document: only the newest is indexed."""
    newest: dict[str, Document] = {}
    for document in documents:
        kept = newest.get(document.doc_id)
        if kept is None or document.version >= kept.version:
            if kept is not None:
                results.append(DocResult(kept.doc_id, kept.version, Status.SUPERSEDED, reason="newer record in file"))
            newest[document.doc_id] = document
        else:
            results.append(DocResult(document.doc_id, document.version, Status.SUPERSEDED,
                                     reason="newer record in file"))
    return list(newest.values())


@dataclass
class BatchConfig(PipelineSettings):
    source: str | Sequence[str]
    collection: str
    milvus_uri: str
    ledger_url: str  # redis://... or a SQLite path
    checkpoint_url: str  # redis://... or a SQLite path
    job_id: str = "local"
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    shard_index: int = 0
    shard_count: int = 1
    max_concurrency: int = defaults.MAX_CONCURRENCY
    embed_batch_size: int = defaults.BATCH_EMBED_BATCH_SIZE
    bulk_load: bool = False
    create_collection: bool = True  # False: an EmbeddingIndex's collection, never made (or remade) by a write
    prune: bool = False  # remove documents this source wrote whose file is no longer listed
    prune_max_fraction: float = DEFAULT_MAX_FRACTION
    source_id: str | None = None  # who "this source" is for provenance; default: sources and filters
    # A finished checkpoint means: the local CLI starts a new run; a Job's pod (same job_id,
    # e.g. a pod replaced after it finished) returns the finished run's report instead.
    rerun_completed: bool = True

    def __post_init__(self):
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard index {self.shard_index} is not in [0, {self.shard_count})")
        if self.max_concurrency < 1 or self.embed_batch_size < 1:
            raise ValueError("max_concurrency and embed_batch_size must be at least 1")
        if not 0 <= self.prune_max_fraction <= 1:
            raise ValueError(f"prune max fraction {self.prune_max_fraction} is not in [0, 1]")

    @property
    def provenance_source(self) -> str:
        """Two runs are "the same source" when they list the same thing: sources and filters."""
        if self.source_id:
            return self.source_id
        sources = [self.source] if isinstance(self.source, str) else list(self.source)
        return " ".join(sorted(sources)) + "".join(f" +{g}" for g in self.include) + "".join(
            f" -{g}" for g in self.exclude)

    @property
    def checkpoint_key(self) -> str:
        return keys.checkpoint_key(self.job_id, self.collection, self.shard_index, self.shard_count)


@dataclass
class _Loaded:
    ref: DocumentRef
    prepared: list[PreparedDoc]
    results: list[DocResult]


class BatchWorker:
    def __init__(self, config: BatchConfig, on_progress: Callable[[Report, int], None] | None = None):
        self.config = config
        self.on_progress = on_progress
        self.source = open_source(config.source, include=config.include, exclude=config.exclude)
        self.parser = Parser(config.parser)
        self.embedder = Embedder(config.embedder_config(config.embed_batch_size))
        self.writer: MilvusWriter | None = None
        self.indexer: DocumentIndexer | None = None
        self.checkpoints = None
        self.ledger = None

    def warm_up(self) -> None:
        cfg = self.config
        self.source.warm_up()
        self.parser.warm_up()
        self.embedder.warm_up()
        chunker = Chunker.for_model_path(self.embedder.model_path, cfg.chunking, self.embedder.max_seq_length)
        self.writer = MilvusWriter(cfg.writer_config(
            cfg.milvus_uri, cfg.collection, self.embedder,
            bulk_load=cfg.bulk_load, bulk_load_run=f"{cfg.job_id}/{cfg.collection}",
            create_if_missing=cfg.create_collection,
        ))
        self.checkpoints = open_checkpoint_store(cfg.checkpoint_url)
        self.ledger = open_ledger(cfg.ledger_url, namespace=cfg.collection)
        self._state = self.checkpoints.load(cfg.checkpoint_key)
        if self._state is not None and self._state.completed and not cfg.rerun_completed:
            log.info("run %s of %s already completed; nothing to do", self._state.run_id, cfg.checkpoint_key)
        elif self._state is None or self._state.completed:
            self._state = CheckpointState()
            # A resumed bulk load finds its own rows in the collection; only a fresh run checks.
            self.writer.warm_up()
        else:
            self._warm_up_resumed_writer()
        self.indexer = DocumentIndexer(chunker, self.embedder, self.writer, self.ledger, self._state.run_id)

    def _warm_up_resumed_writer(self) -> None:
        """A resumed bulk load expects its own rows already there: skip the empty-collection check."""
        bulk = self.writer.config.bulk_load
        self.writer.config = replace(self.writer.config, bulk_load=False)
        try:
            self.writer.warm_up()
        finally:
            self.writer.config = replace(self.writer.config, bulk_load=bulk)

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> Report:
        cfg = self.config
        state = self._state
        report = Report.from_dict(state.report) if state.report else Report()
        if state.completed:
            return report
        resumed_duration = report.duration_s
        started = time.monotonic()
        tracker = WatermarkTracker(state)

        shard = [ref for ref in self.source.list() if shard_of(ref.doc_id, cfg.shard_count) == cfg.shard_index]
        refs = [ref for ref in shard if not state.covers(ref.doc_id)]
        state.sources_total = len(shard)
        state.sources_done = len(shard) - len(refs)
        if state.sources_done:
            log.info("resuming run %s: %d of %d sources already done (checkpoint %s)",
                     state.run_id, state.sources_done, state.sources_total, cfg.checkpoint_key)
        if self.on_progress:
            self.on_progress(report, len(refs))

        loaded: queue.Queue = queue.Queue(maxsize=cfg.max_concurrency * 2)
        embedded: queue.Queue = queue.Queue(maxsize=2)
        errors: list[BaseException] = []
        stop = threading.Event()

        def put(q: queue.Queue, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        limit = cfg.parser.max_document_bytes

        def load(ref: DocumentRef) -> _Loaded:
            try:
                if ref.size is not None and ref.size > limit:  # don't even read it
                    raise DocumentError(f"document is {ref.size} bytes, over the {limit}-byte limit")
                parsed = self.parser.run(self.source.read(ref))
            except DocumentError as exc:
                return _Loaded(ref, [], [DocResult(ref.doc_id, ref.version, Status.FAILED, reason=str(exc))])
            prepared, results = [], [
                DocResult(doc_id, ref.version, Status.FAILED, reason=reason) for doc_id, reason in parsed.failures
            ]
            for document in newest_per_doc_id(parsed.documents, results):
                outcome = self.indexer.prepare(document)
                (prepared if isinstance(outcome, PreparedDoc) else results).append(outcome)
            return _Loaded(ref, prepared, results)

        def feed() -> None:
            # Submit in order with a bounded window; hand results on in submission order.
            window: list[Future] = []
            with ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix="load") as pool:
                for ref in refs:
                    if stop.is_set():
                        return
                    tracker.started(ref.doc_id)
                    window.append(pool.submit(load, ref))
                    while len(window) > cfg.max_concurrency * 2 or (window and window[0].done()):
                        if not put(loaded, window.pop(0).result()):
                            return
                for future in window:
                    if not put(loaded, future.result()):
                        return
            put(loaded, _DONE)

        def embed() -> None:
            group: list[_Loaded] = []
            chunks = 0
            call_size = max(cfg.embed_batch_size, self.embedder.call_size)  # a GPU takes more per call
            while True:
                try:
                    item = loaded.get(timeout=0.05 if group else 0.5)
                except queue.Empty:
                    if stop.is_set():
                        return
                    if group:  # the loaders are slower than the model: don't let chunks wait
                        self._embed_group(group)
                        put(embedded, group)
                        group, chunks = [], 0
                    continue
                if item is _DONE:
                    if group:
                        self._embed_group(group)
                        put(embedded, group)
                    put(embedded, _DONE)
                    return
                group.append(item)
                chunks += sum(len(p.chunks) for p in item.prepared)
                if chunks >= call_size:
                    self._embed_group(group)
                    if not put(embedded, group):
                        return
                    group, chunks = [], 0

        def guarded(fn):
            def run():
                try:
                    fn()
                except BaseException as exc:  # surfaced to the caller as the run's fatal error
                    errors.append(exc)
                    stop.set()
            return threading.Thread(target=run, name=fn.__name__, daemon=True)

        threads = [guarded(feed), guarded(embed)]
        for thread in threads:
            thread.start()
        try:
            while True:
                try:
                    group = embedded.get(timeout=0.5)
                except queue.Empty:
                    if stop.is_set():
                        break
                    continue
                if group is _DONE:
                    break
                self._write_group(group, report, tracker)
                report.duration_s = resumed_duration + time.monotonic() - started
                state.report = report.to_dict()
                self.checkpoints.save(cfg.checkpoint_key, state)
                metrics.CHECKPOINT_POSITION.labels(str(cfg.shard_index)).set(
                    report.documents_total)
                if self.on_progress:
                    self.on_progress(report, len(refs))
        except BaseException:
            stop.set()
            raise
        finally:
            for thread in threads:
                thread.join(timeout=30)
        if errors:
            raise errors[0]

        if cfg.prune:
            self._prune({ref.doc_id for ref in shard}, report)
        if cfg.bulk_load:
            self.writer.finish_bulk_load()
        report.duration_s = resumed_duration + time.monotonic() - started
        state.report = report.to_dict()
        state.completed = True
        self.checkpoints.save(cfg.checkpoint_key, state)
        return report

    def _embed_group(self, group: list[_Loaded]) -> None:
        prepared = [p for item in group for p in item.prepared]
        if prepared:
            self.indexer.embed(prepared)

    def _write_group(self, group: list[_Loaded], report: Report, tracker: WatermarkTracker) -> None:
        prepared = [p for item in group for p in item.prepared]
        written = iter(self.indexer.write(prepared))  # one result per prepared doc, in order
        provenance: dict[str, Provenance] = {}
        for item in group:
            for result in item.results + [next(written) for _ in item.prepared]:
                report.add(result)
                metrics.DOCUMENTS.labels(result.status.value).inc()
                metrics.CHUNKS_WRITTEN.inc(result.chunks_written)
                if result.status in (Status.SUCCEEDED, Status.UNCHANGED):  # what this source holds now
                    provenance[result.doc_id] = Provenance(item.ref.doc_id, result.version)
            tracker.finished(item.ref.doc_id)
        # Before the checkpoint that covers these documents: a resumed run never lacks their provenance.
        self.ledger.record_provenance(self.config.provenance_source, provenance)

    def _prune(self, listed: set[str], report: Report) -> None:
        """After a complete listing: tombstone what this source wrote and no longer lists (prune.py)."""
        cfg = self.config
        source = cfg.provenance_source
        provenance = self.ledger.provenance(source)
        in_shard = lambda origin: shard_of(origin, cfg.shard_count) == cfg.shard_index  # noqa: E731
        gone = [d for d, p in provenance.items() if in_shard(p.origin) and p.origin not in listed]
        plan = plan_prune(provenance, listed, in_shard, {d: self.ledger.get(d) for d in gone},
                          cfg.prune_max_fraction)
        self.ledger.forget_provenance(source, list(plan.forget))
        if plan.refused:
            log.warning("%s", plan.message)
            report.prune_refused, report.prune_message = plan.gone, plan.message
            return
        for doc_id, version in plan.prune.items():
            result = self.indexer.delete(doc_id, version)
            if result.status is Status.DELETED:
                report.documents_pruned += 1
            # A newer write won the race (SUPERSEDED): it stays, and is no longer this source's.
            self.ledger.forget_provenance(source, [doc_id])
        if plan.prune:
            shard = f" of shard {cfg.shard_index}" if cfg.shard_count > 1 else ""
            report.prune_message = (f"pruned {report.documents_pruned} of {plan.known} documents{shard}: "
                                    f"gone from the source")
            log.info("%s", report.prune_message)

    def close(self) -> None:
        for resource in (self.writer, self.ledger, self.checkpoints):
            if resource is not None:
                resource.close()


def default_paths(home: Path) -> dict[str, str]:
    """Where the embedded mode keeps its state under TRIBUTARY_HOME."""
    return {
        "milvus_uri": str(home / "milvus.db"),
        "ledger_url": str(home / "ledger.sqlite"),
        "checkpoint_url": str(home / "checkpoints.sqlite"),
    }
