"""ONNX Runtime and torch on the real bundled model: the export works offline, fp32 vectors agree
with torch's, and a collection refuses vectors of another quantization.

One offline export (in a subprocess with HF_HUB_OFFLINE=1, into a fresh cache) serves every test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from tributary_workers.contract import env as ENV
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig
from harness.models import SAMPLE_CHUNKS as CHUNKS
from tributary_workers.pipeline.writer import IncompatibleCollectionError, MilvusWriter, WriterConfig



@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A fresh cache, filled by an offline export in its own process, then used by this module."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **{ENV.MODEL_CACHE: str(cache)})
    code = ("from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig\n"
            "for q in ('none', 'int8'):\n"
            "    Embedder(EmbedderConfig(backend='onnx', quantize=q, device='cpu')).warm_up()\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    previous = os.environ.get(ENV.MODEL_CACHE)
    os.environ[ENV.MODEL_CACHE] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop(ENV.MODEL_CACHE, None)
    else:
        os.environ[ENV.MODEL_CACHE] = previous


def test_export_runs_offline_into_the_worker_cache(model_cache):
    [folder] = [p for p in model_cache.iterdir() if p.is_dir()]
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "model-int8.onnx"}  # no temp files left


def test_onnx_fp32_agrees_with_torch_and_shares_its_model_id(model_cache):
    torch_embedder = Embedder(EmbedderConfig(backend="torch", device="cpu", batch_size=2))
    onnx_embedder = Embedder(EmbedderConfig(backend="onnx", device="cpu", batch_size=2))
    reference, vectors = torch_embedder.run(CHUNKS), onnx_embedder.run(CHUNKS)
    assert onnx_embedder.backend == "onnx" and vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(reference * vectors, axis=1)) >= 0.99
    assert onnx_embedder.model_id == torch_embedder.model_id


def test_a_collection_refuses_vectors_of_another_quantization(model_cache, milvus_server, collection_name):
    fp32 = Embedder(EmbedderConfig(backend="torch", device="cpu"))
    int8 = Embedder(EmbedderConfig(backend="onnx", quantize="int8", device="cpu"))
    onnx_fp32 = Embedder(EmbedderConfig(backend="onnx", device="cpu"))

    def writer(embedder: Embedder) -> MilvusWriter:
        return MilvusWriter(WriterConfig(uri=milvus_server.uri, collection=collection_name,
                                         model_id=embedder.model_id, dimension=embedder.dimension))

    first = writer(fp32)
    first.warm_up()
    first.close()
    with pytest.raises(IncompatibleCollectionError, match=r"\+onnx-int8"):
        writer(int8).warm_up()
    same = writer(onnx_fp32)
    same.warm_up()  # fp32 ONNX is the same encoder: accepted
    same.close()
    vectors = int8.run(CHUNKS)
    assert np.mean(np.sum(fp32.run(CHUNKS) * vectors, axis=1)) < 0.9999  # int8 really is another encoder
