"""The directly fed torch path on the real bundled and derived models, on CPU (CI has no GPU).

It must be the same encoder as ``encode``: vectors within cosine 0.999 (fp32 and fp16), unit
length, in the caller's order however the chunks were sliced and length-batched, and the same
model id (a collection accepts both).
"""

from __future__ import annotations

import numpy as np
import pytest
from harness.models import SAMPLE_CHUNKS
from tributary_workers.pipeline.direct import DirectEncoder
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig

CHUNKS = [
    *SAMPLE_CHUNKS,
    "Blue-green re-embedding builds a candidate collection, backfills it and swaps the alias.",
    "The scaler reads lag and pending from XINFO GROUPS; a nil lag is never taken for zero.",
] * 3


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_direct_agrees_with_encode_and_keeps_the_model_id(bundled, half):
    direct = Embedder(EmbedderConfig(device="cpu", direct=True, half=half, batch_size=4, token_budget=96))
    vectors = direct.run(CHUNKS)
    reference = bundled.run(CHUNKS)
    assert direct._direct is not None and direct._direct.half is half  # really the direct path
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines(vectors, reference).min() >= (0.9999 if not half else 0.999)
    assert direct.model_id == bundled.model_id


def test_many_slices_and_the_prefetch_thread_keep_the_callers_order(bundled):
    """Slices of 5 chunks (so the background thread runs) and batches of at most 3."""
    encoder = DirectEncoder(bundled.model, "cpu", bundled.max_seq_length, max_rows=3, token_budget=64,
                            half=False, slice_size=5)
    texts = [f"document {i}: " + "words " * (i % 9) for i in range(23)]
    vectors = encoder.encode(texts)
    assert vectors.shape == (23, bundled.dimension)
    assert cosines(vectors, bundled.run(texts)).min() >= 0.9999
    assert encoder.encode([]).shape == (0, bundled.dimension)


def test_a_model_with_modules_after_pooling_runs_them_as_encode_does(derived_path):
    """The derived model (Dense 384->256 then Normalize) gives 256-dimension vectors either way."""
    config = dict(model=str(derived_path), device="cpu", batch_size=4)
    direct, reference = Embedder(EmbedderConfig(**config, direct=True)), Embedder(EmbedderConfig(**config))
    vectors = direct.run(CHUNKS)
    assert vectors.shape == (len(CHUNKS), 256) and direct.dimension == 256
    assert cosines(vectors, reference.run(CHUNKS)).min() >= 0.9999
    assert direct.model_id == reference.model_id
