"""The model and collection settings both workers take (one definition, so batch and stream agree)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tributary_workers.contract import defaults
from tributary_workers.pipeline.chunker import ChunkerConfig
from tributary_workers.pipeline.embedder import EmbedderConfig
from tributary_workers.pipeline.parsers import ParserOptions
from tributary_workers.pipeline.writer import WriterConfig


@dataclass(kw_only=True)
class PipelineSettings:
    """How documents become vectors (model, chunking, parsing) and how a missing collection is created.

    A base of BatchConfig and StreamConfig; keyword-only, so each config keeps its own positional
    fields first.
    """

    model: str | None = None  # None: the bundled all-MiniLM-L6-v2; else a local path
    dimension: int | None = None  # expected vector length, checked at warm-up; None: the model's
    max_seq_length: int | None = None  # caps chunks below the model's own limit
    device: str | None = None  # None: CUDA when available, else CPU
    backend: str = defaults.BACKEND  # torch | onnx (EmbedderConfig)
    quantize: str = defaults.QUANTIZE  # none | int8
    chunking: ChunkerConfig = field(default_factory=ChunkerConfig)
    parser: ParserOptions = field(default_factory=ParserOptions)
    metric_type: str = defaults.METRIC_TYPE
    index_type: str = defaults.INDEX_TYPE
    index_params: dict[str, Any] = field(default_factory=dict)
    db_name: str | None = None
    replicas: int = defaults.REPLICAS

    def embedder_config(self, batch_size: int) -> EmbedderConfig:
        """The embedder of this config's model (a routing target replaces the model's settings)."""
        return EmbedderConfig(model=self.model, batch_size=batch_size, device=self.device, dimension=self.dimension,
                              max_seq_length=self.max_seq_length, backend=self.backend, quantize=self.quantize)

    def writer_config(self, uri: str, collection: str, embedder, **extra: Any) -> WriterConfig:
        return WriterConfig(uri=uri, collection=collection, model_id=embedder.model_id, dimension=embedder.dimension,
                            metric_type=self.metric_type, index_type=self.index_type,
                            index_params=dict(self.index_params), db_name=self.db_name, replicas=self.replicas,
                            **extra)
