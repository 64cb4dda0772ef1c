"""What a streaming worker writes to: the write targets of a batch, and the set it keeps open.

A target is one entry of the routing record (collection, model and its optional settings), with
its own embedder, chunker, writer and version-ledger namespace. ``TargetSet`` keeps one open per
target (a changed setting is another target; one no longer routed to is closed) and one
embedder and chunker per model and settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tributary_workers.contract.routing import RoutingError, RoutingRecord, Target
from tributary_workers.documents import Document
from tributary_workers.errors import PermanentError, one_line
from tributary_workers.ledger import open_ledger
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig
from tributary_workers.pipeline.embedder import Embedder, ModelNotFoundError, resolve_model
from tributary_workers.pipeline.indexer import DocResult, DocumentIndexer
from tributary_workers.pipeline.settings import PipelineSettings
from tributary_workers.pipeline.writer import AliasTargetError, CollectionNotFoundError, MilvusWriter
from tributary_workers.streaming.config import StreamConfig


# --- write targets ------------------------------------------------------------------------------


class TargetRefused(RoutingError):
    """A routing target no write may go to (an alias, a missing active collection, settings the
    model cannot honour): like an invalid record, the worker holds its batches until it is fixed."""


@dataclass(frozen=True)
class StageSettings:
    """How a target's documents become vectors: its own settings, else the worker's."""

    model: str | None
    backend: str
    quantize: str
    dimension: int | None
    chunking: ChunkerConfig


def stage_settings(target: Target | None, cfg: PipelineSettings) -> StageSettings:
    """A target's settings over the worker's configured ones. The configured dimension is expected
    of the configured model only; an int8 target without a backend runs onnx (int8 needs it), a
    torch one without a quantization runs full precision."""
    if target is None:
        return StageSettings(cfg.model, cfg.backend, cfg.quantize, cfg.dimension, cfg.chunking)
    backend = target.backend or ("onnx" if target.quantize == "int8" else cfg.backend)
    quantize = target.quantize or ("none" if backend == "torch" else cfg.quantize)
    dimension = target.dimension
    if dimension is None and target.model == cfg.model:
        dimension = cfg.dimension
    chunking = ChunkerConfig(
        max_tokens=target.max_tokens if target.max_tokens is not None else cfg.chunking.max_tokens,
        overlap_tokens=target.overlap_tokens if target.overlap_tokens is not None else cfg.chunking.overlap_tokens)
    return StageSettings(target.model, backend, quantize, dimension, chunking)


class WriteTarget:
    """One target: its own embedder, chunker, writer and ledger namespace.

    ``routed``: from a routing record (else the worker's configured collection, created when
    missing as always). A routed target is refused when its name is an alias, and its collection
    is created only when it is a secondary with ``create`` (the candidate); ``active`` is set by
    the worker from the target's position at every batch."""

    def __init__(self, spec: Target, owner: TargetSet, routed: bool = True):
        self.spec = spec
        self.collection = spec.collection
        self.model = spec.model
        self.routed = routed
        self.active = True
        self.settings = stage_settings(spec if routed else None, owner.config)
        self.owner = owner
        self.indexer: DocumentIndexer | None = None

    @property
    def ready(self) -> bool:
        """Warmed up: embedder loaded, collection reachable (created when allowed and missing)."""
        return self.indexer is not None

    @property
    def may_create(self) -> bool:
        return not self.routed or (self.spec.create and not self.active)

    def warm_up(self) -> None:
        if self.indexer is not None:
            return
        cfg = self.owner.config
        try:
            embedder, chunker = self.owner.stages(self.settings)
        except PermanentError as exc:  # the record's settings: the active holds, a secondary fails alone
            if self.routed and self.active:
                raise TargetRefused(f"routing target {self.collection}: {one_line(exc)}") from None
            raise
        writer = MilvusWriter(cfg.writer_config(cfg.milvus_uri, self.collection, embedder,
                                                create_if_missing=self.may_create, refuse_alias=self.routed))
        try:
            writer.warm_up()
        except AliasTargetError as exc:
            writer.close()
            raise TargetRefused(f"routing target {exc}") from None
        except CollectionNotFoundError as exc:
            writer.close()
            if self.active:
                raise TargetRefused(f"routing target {self.collection}: {exc} (the active collection is never "
                                    "created by a write)") from None
            raise CollectionNotFoundError(f"{exc} (a write creates only a target with create: true)") from None
        except BaseException:
            writer.close()
            raise
        ledger = open_ledger(cfg.ledger_url, namespace=self.collection)
        self.indexer = DocumentIndexer(chunker, embedder, writer, ledger, cfg.writer_id)

    def apply(self, upserts: Sequence[Document], deletes: Sequence[tuple[str, int]]) -> list[DocResult]:
        self.warm_up()
        results = self.indexer.index(upserts) if upserts else []
        results += [self.indexer.delete(doc_id, version) for doc_id, version in deletes]
        return results

    def close(self) -> None:
        if self.indexer is not None:
            for resource in (self.indexer.writer, self.indexer.ledger):
                try:
                    resource.close()
                except Exception:  # closing is best effort
                    pass
            self.indexer = None


class TargetSet:
    """The targets a worker has open, and the embedders and chunkers they share."""

    def __init__(self, config: StreamConfig):
        self.config = config
        self._open: dict[tuple[Target, bool, str], WriteTarget] = {}
        self._stages: dict[tuple, tuple[Embedder, Chunker]] = {}

    @property
    def open(self) -> list[WriteTarget]:
        return list(self._open.values())

    def stages(self, settings: StageSettings) -> tuple[Embedder, Chunker]:
        """One embedder and chunker per model and settings (a model itself loads once per process)."""
        path, _ = resolve_model(settings.model)
        key = (str(path), settings.backend, settings.quantize, settings.dimension, settings.chunking)
        if key not in self._stages:
            cfg = self.config
            embedder = Embedder(replace(cfg.embedder_config(cfg.embed_batch_size), model=settings.model,
                                        backend=settings.backend, quantize=settings.quantize,
                                        dimension=settings.dimension))
            embedder.warm_up()
            chunker = Chunker.for_model_path(embedder.model_path, settings.chunking, embedder.max_seq_length)
            self._stages[key] = (embedder, chunker)
        return self._stages[key]

    def _target(self, spec: Target, routed: bool) -> WriteTarget:
        """Cached by the whole target (a changed setting is another target) and the model's path."""
        try:
            key = (spec, routed, str(resolve_model(spec.model)[0]))
        except ModelNotFoundError as exc:
            raise RoutingError(f"routing target {spec.collection!r}: {exc}") from None
        if key not in self._open:
            self._open[key] = WriteTarget(spec, self, routed)
        return self._open[key]

    def of(self, record: RoutingRecord | None) -> list[WriteTarget]:
        """The targets of a routing record, the active first (None: the configured collection);
        open ones no longer among them are closed."""
        cfg = self.config
        if record is None:
            # Not validated as a routing target: the configured name is the operator's or the CLI's.
            targets = [self._target(Target.model_construct(collection=cfg.collection, model=cfg.model), False)]
        else:
            targets = [self._target(spec, True) for spec in record.targets]
        for position, target in enumerate(targets):
            target.active = position == 0
        for key in [k for k, t in self._open.items() if t not in targets]:
            self._open.pop(key).close()
        return targets

    @staticmethod
    def refuse_unfit(targets: Sequence[WriteTarget]) -> None:
        """Warm every target up; a refused one (TargetRefused) holds the batch like an invalid
        record. Other warm-up errors are left to the write, which fails them again: retried for
        the active, recorded for repair for a secondary."""
        for target in targets:
            try:
                target.warm_up()
            except RoutingError:
                raise
            except Exception:
                pass

    def close(self) -> None:
        for target in self._open.values():
            target.close()
        self._open.clear()
