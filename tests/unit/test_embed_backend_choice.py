"""The backend choice end to end without a model: encoder ids, flags and env, CRD fields, the env
the operator writes, and which spec changes are re-embeddings."""

from __future__ import annotations

import os

import pytest
from tributary_operator.api.v1alpha1 import EmbeddingIndexSpec, IngestionJob
from tributary_operator.core.embeddingindex import collection_name, model_id
from tributary_operator.core.ingestion import OperatorDefaults, build_job, inline_target
from tributary_workers.cli import batch_worker, stream_worker
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.contract.encoder import encoder_id
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig, ModelMismatchError

MODEL = defaults.DEFAULT_MODEL_ID


def test_full_precision_backends_share_an_encoder_id_and_int8_does_not():
    assert encoder_id(MODEL, "torch") == encoder_id(MODEL, "onnx") == MODEL
    assert encoder_id(MODEL, "onnx", "int8") == f"{MODEL}+onnx-int8"
    with pytest.raises(ValueError, match="needs backend onnx"):
        encoder_id(MODEL, "torch", "int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        encoder_id(MODEL, "tensorflow")


def test_embedder_records_the_encoder_id_and_refuses_a_bad_pair_in_one_line():
    assert Embedder(EmbedderConfig(backend="onnx", quantize="int8")).model_id == f"{MODEL}+onnx-int8"
    assert Embedder(EmbedderConfig(backend="torch")).model_id == MODEL
    with pytest.raises(ModelMismatchError, match="quantize int8 needs backend onnx"):
        Embedder(EmbedderConfig(backend="torch", quantize="int8"))


@pytest.mark.parametrize("module", [batch_worker, stream_worker])
def test_worker_flags_and_env(module, monkeypatch):
    for name in (ENV.BACKEND, ENV.QUANTIZE):
        monkeypatch.delenv(name, raising=False)
    args = module.build_parser().parse_args([])
    assert (args.backend, args.quantize) == (defaults.BACKEND, defaults.QUANTIZE)
    monkeypatch.setenv(ENV.BACKEND, "torch")
    assert module.build_parser().parse_args([]).backend == "torch"
    assert module.build_parser().parse_args(["--backend", "onnx", "--quantize", "int8"]).quantize == "int8"


def ingestion_job(model: dict) -> IngestionJob:
    spec = {"source": {"type": "s3", "uri": "s3://docs/"},
            "target": {"inline": {"milvusUri": "http://milvus:19530", "collection": "handbook", "model": model}}}
    return IngestionJob.from_body({"apiVersion": "tributary.dev/v1alpha1", "kind": "IngestionJob",
                                   "metadata": {"name": "handbook", "namespace": "rag"}, "spec": spec})


def test_the_operator_passes_backend_and_quantize_to_the_batch_worker(monkeypatch):
    ij = ingestion_job({"name": MODEL, "backend": "onnx", "quantize": "int8"})
    job = build_job(ij, "handbook-1", inline_target(ij.spec), OperatorDefaults())
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env[ENV.BACKEND], env[ENV.QUANTIZE]) == ("onnx", "int8")
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    config = batch_worker.config_from_args(batch_worker.build_parser().parse_args([]))
    assert (config.backend, config.quantize) == ("onnx", "int8")
    plain = ingestion_job({"name": MODEL})
    job = build_job(plain, "handbook-1", inline_target(plain.spec), OperatorDefaults())
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert ENV.BACKEND not in names and ENV.QUANTIZE not in names  # the workers' default applies


def test_int8_needs_onnx_in_the_crd():
    for model in ({"backend": "torch", "quantize": "int8"}, {"quantize": "int8"}):
        with pytest.raises(ValueError, match="quantize int8 needs model.backend onnx"):
            EmbeddingIndexSpec.model_validate({"milvus": {"uri": "http://m:19530"}, "alias": "a",
                                               "model": {"name": MODEL, **model}})


def index(model: dict) -> EmbeddingIndexSpec:
    return EmbeddingIndexSpec.model_validate({"milvus": {"uri": "http://m:19530"}, "alias": "handbook",
                                              "model": {"name": MODEL, **model}})


def test_backend_is_not_essence_but_int8_is():
    plain = collection_name(index({}))
    assert collection_name(index({"backend": "torch"})) == plain
    assert collection_name(index({"backend": "onnx", "quantize": "none"})) == plain
    assert collection_name(index({"backend": "onnx", "quantize": "int8"})) != plain
    assert model_id(MODEL, "int8") == encoder_id(MODEL, "onnx", "int8")
    assert model_id(MODEL, None) == model_id(MODEL, "none") == MODEL


def test_default_is_documented_where_it_is_chosen():
    assert defaults.BACKEND in defaults.BACKENDS and defaults.QUANTIZE == "none"
    assert os.path.exists(os.path.join(os.path.dirname(__file__), "..", "..", "bench", "embed_backends.py"))
