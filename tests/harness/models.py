"""A second embedding model for re-embedding tests, derived locally (never downloaded).

    derived_model(folder)  a sentence-transformers folder: the bundled all-MiniLM-L6-v2 followed by
                           a fixed Dense 384->256 projection (the first 256 output dimensions) and
                           normalisation. Another model id (the folder's name and a digest of
                           its files), another dimension, vectors that still retrieve like the
                           original's.
    derived_path  (session fixture) derived_model built once per test session
    bundled       (session fixture) the bundled model's Embedder, warmed up
    collapsed_model(folder)  the same with a projection that maps every text to one vector: a model
                           that cannot retrieve anything, for a validation gate that must fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DERIVED_DIMENSION = 256
# Chunks of varied length and kind, for tests that compare two encoders' vectors.
SAMPLE_CHUNKS = [
    "Tributary ingests documents into Milvus for retrieval-augmented generation.",
    "A river's tributaries join it upstream; each carries water and sediment from its own basin. " * 6,
    "kubectl apply -f ingestionjob.yaml",
    "Length bucketing sorts chunks by token count so that a batch is padded to a similar width.",
    "short",
]


def collapsed_model(folder: Path, dimension: int = DERIVED_DIMENSION) -> Path:
    return derived_model(folder, dimension, collapse=True)


def derived_model(folder: Path, dimension: int = DERIVED_DIMENSION, collapse: bool = False) -> Path:
    """Build it once into ``folder`` (reused when it is already there); returns the folder."""
    folder = Path(folder)
    if (folder / "modules.json").exists():
        return folder
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from tributary_workers.pipeline.embedder import default_model_path

    base = SentenceTransformer(str(default_model_path()), device="cpu")
    width = base.get_embedding_dimension()
    dense = models.Dense(in_features=width, out_features=dimension, bias=True,
                         activation_function=torch.nn.Identity())
    with torch.no_grad():
        if collapse:  # no weights, one bias: the same vector whatever the text
            dense.linear.weight.zero_()
            dense.linear.bias.fill_(1.0)
        else:
            dense.linear.weight.copy_(torch.eye(width)[:dimension])
            dense.linear.bias.zero_()
    derived = SentenceTransformer(modules=[*base, dense, models.Normalize()], device="cpu")
    tmp = folder.with_name(folder.name + ".partial")
    derived.save(str(tmp))
    tmp.rename(folder)
    return folder


@pytest.fixture(scope="session")
def derived_path(tmp_path_factory) -> Path:
    return derived_model(tmp_path_factory.mktemp("models") / "derived-256")


@pytest.fixture(scope="session")
def bundled():
    from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig

    embedder = Embedder(EmbedderConfig(device="cpu"))
    embedder.warm_up()
    return embedder
