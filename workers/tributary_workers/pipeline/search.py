"""Top-k search over an index with the model that filled it."""

from __future__ import annotations

from tributary_workers.contract import defaults
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
from tributary_workers.pipeline.writer import Hit, MilvusWriter, WriterConfig


class Searcher:
    def __init__(self, milvus_uri: str, collection: str, model: str | None = None, metric_type: str = "COSINE",
                 backend: str = defaults.BACKEND, quantize: str = defaults.QUANTIZE):
        self.embedder = Embedder(EmbedderConfig(model=model, backend=backend, quantize=quantize))
        self.milvus_uri = milvus_uri
        self.collection = collection
        self.metric_type = metric_type
        self.writer: MilvusWriter | None = None

    def warm_up(self) -> None:
        self.embedder.warm_up()
        self.writer = MilvusWriter(WriterConfig(
            uri=self.milvus_uri, collection=self.collection, model_id=self.embedder.model_id,
            dimension=self.embedder.dimension, metric_type=self.metric_type, create_if_missing=False,
        ))
        self.writer.warm_up()

    def run(self, text: str, k: int = 5) -> list[Hit]:
        return self.writer.search(self.embedder.run([text])[0], k)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
