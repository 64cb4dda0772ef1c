"""The operator ↔ worker contract, pinned without a cluster: the CRDs and the workers agree on every
shared default, and the env that the operator writes into a Job is what the batch worker parses."""

from __future__ import annotations

import dataclasses
import os

import pytest
from tributary_operator.api.v1alpha1 import (
    Backpressure, Batching, Chunking, IngestionJob, IngestionJobSpec, Retry, Serving, StreamQueue, VectorIndex,
)
from tributary_operator.core.ingestion import OperatorDefaults, build_job, checkpoint_configmap_name, inline_target
from tributary_workers.batch.worker import BatchConfig
from tributary_workers.cli import batch_worker, stream_worker
from tributary_workers.contract import env as ENV
from tributary_workers.pipeline.chunker import ChunkerConfig
from tributary_workers.streaming.config import StreamConfig
from tributary_workers.streaming.gateway import GatewayConfig
from tributary_workers.streaming.producer import Producer
from tributary_workers.streaming.queue import DEFAULT_GROUP


def crd_default(model, field: str):
    return model.model_fields[field].default


def dataclass_default(cls, field: str):
    (match,) = [f for f in dataclasses.fields(cls) if f.name == field]
    return match.default


def flag_default(parser, dest: str, monkeypatch):
    for name in [n for n in list(os.environ) if n.startswith("TRIBUTARY_")]:
        monkeypatch.delenv(name)
    return vars(parser.build_parser().parse_args([]))[dest]


SHARED = [
    # (setting, CRD default, worker defaults that must equal it)
    ("IngestionJob maxConcurrency", lambda: crd_default(IngestionJobSpec, "max_concurrency"),
     [lambda mp: dataclass_default(BatchConfig, "max_concurrency"),
      lambda mp: flag_default(batch_worker, "max_concurrency", mp)]),
    ("IngestionJob embedBatchSize", lambda: crd_default(IngestionJobSpec, "embed_batch_size"),
     [lambda mp: dataclass_default(BatchConfig, "embed_batch_size"),
      lambda mp: flag_default(batch_worker, "embed_batch_size", mp)]),
    ("chunking.overlapTokens", lambda: crd_default(Chunking, "overlap_tokens"),
     [lambda mp: dataclass_default(ChunkerConfig, "overlap_tokens"),
      lambda mp: flag_default(batch_worker, "overlap_tokens", mp),
      lambda mp: flag_default(stream_worker, "overlap_tokens", mp)]),
    ("batching.maxBatchSize", lambda: crd_default(Batching, "max_batch_size"),
     [lambda mp: dataclass_default(StreamConfig, "max_batch_size"),
      lambda mp: flag_default(stream_worker, "max_batch_size", mp)]),
    ("batching.maxWaitMs", lambda: crd_default(Batching, "max_wait_ms"),
     [lambda mp: dataclass_default(StreamConfig, "max_wait_ms"),
      lambda mp: flag_default(stream_worker, "max_wait_ms", mp)]),
    ("retry.claimIdleMs", lambda: crd_default(Retry, "claim_idle_ms"),
     [lambda mp: dataclass_default(StreamConfig, "claim_idle_ms"),
      lambda mp: flag_default(stream_worker, "claim_idle_ms", mp)]),
    ("retry.maxDeliveries", lambda: crd_default(Retry, "max_deliveries"),
     [lambda mp: dataclass_default(StreamConfig, "max_deliveries"),
      lambda mp: flag_default(stream_worker, "max_deliveries", mp)]),
    ("queue.group", lambda: crd_default(StreamQueue, "group"), [lambda mp: DEFAULT_GROUP]),
    ("backpressure.highWatermark", lambda: crd_default(Backpressure, "high_watermark"),
     [lambda mp: dataclass_default(GatewayConfig, "high_watermark"),
      lambda mp: Producer.__init__.__kwdefaults__["high_watermark"]]),
    ("backpressure.lowWatermark", lambda: crd_default(Backpressure, "low_watermark"),
     [lambda mp: dataclass_default(GatewayConfig, "low_watermark"),
      lambda mp: Producer.__init__.__kwdefaults__["low_watermark"]]),
    ("index.metricType", lambda: crd_default(VectorIndex, "metric_type").value,
     [lambda mp: dataclass_default(BatchConfig, "metric_type"), lambda mp: dataclass_default(StreamConfig, "metric_type"),
      lambda mp: flag_default(batch_worker, "metric_type", mp)]),
    ("index.indexType", lambda: crd_default(VectorIndex, "index_type").value,
     [lambda mp: dataclass_default(BatchConfig, "index_type"), lambda mp: flag_default(stream_worker, "index_type", mp)]),
    ("serving.replicas", lambda: crd_default(Serving, "replicas"),
     [lambda mp: dataclass_default(BatchConfig, "replicas"), lambda mp: flag_default(batch_worker, "replicas", mp)]),
]


@pytest.mark.parametrize(("setting", "crd", "workers"), SHARED, ids=[row[0] for row in SHARED])
def test_crd_and_worker_defaults_agree(setting, crd, workers, monkeypatch):
    expected = crd()
    assert [worker(monkeypatch) for worker in workers] == [expected] * len(workers), setting


def make_ij(**spec):
    base = {
        "source": {"type": "s3", "uri": "s3://docs/handbook/", "include": ["*.md", "*.pdf"], "exclude": ["drafts/*"],
                   "credentialsSecretRef": {"name": "s3", "keys": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]}},
        "target": {"inline": {"milvusUri": "http://milvus:19530", "collection": "handbook",
                              "model": {"name": "/models/e5-small", "dimension": 384, "maxSequenceLength": 128},
                              "chunking": {"maxTokens": 200, "overlapTokens": 16},
                              "credentialsSecretRef": {"name": "milvus"}}},
        "parallelism": 3, "maxConcurrency": 2, "embedBatchSize": 48, "mode": "initialLoad",
    }
    base.update(spec)
    return IngestionJob.from_body({"apiVersion": "tributary.dev/v1alpha1", "kind": "IngestionJob",
                                   "metadata": {"name": "handbook", "namespace": "rag"}, "spec": base})


def pod_env(job, monkeypatch, index: int) -> None:
    """Set the process env as the kubelet would for shard `index` (Secrets resolved to placeholders)."""
    for name in [n for n in list(os.environ) if n.startswith(("TRIBUTARY_", "JOB_COMPLETION"))]:
        monkeypatch.delenv(name)
    for item in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        value = item.get("value")
        if value is None:  # a secretKeyRef: the kubelet puts the Secret's value there
            ref = item["valueFrom"]["secretKeyRef"]
            value = f"secret:{ref['name']}/{ref['key']}"
        monkeypatch.setenv(item["name"], value)
    monkeypatch.setenv(ENV.JOB_COMPLETION_INDEX, str(index))  # set by Kubernetes in Indexed Jobs


def test_the_env_build_job_writes_is_the_config_the_batch_worker_runs(monkeypatch):
    ij = make_ij()
    job = build_job(ij, "handbook-1a2b3c4d", inline_target(ij.spec), OperatorDefaults())
    pod_env(job, monkeypatch, index=2)
    config = batch_worker.config_from_args(batch_worker.build_parser().parse_args([]))
    assert config == BatchConfig(
        source="s3://docs/handbook/", include=["*.md", "*.pdf"], exclude=["drafts/*"], collection="handbook",
        milvus_uri="http://milvus:19530", ledger_url="/var/lib/tributary/ledger.sqlite",
        checkpoint_url=f"configmap://rag/{checkpoint_configmap_name('handbook-1a2b3c4d')}",
        job_id="handbook-1a2b3c4d", shard_index=2, shard_count=3, max_concurrency=2, embed_batch_size=48,
        model="/models/e5-small", dimension=384, max_seq_length=128,
        chunking=ChunkerConfig(max_tokens=200, overlap_tokens=16), bulk_load=True, rerun_completed=False,
    )
    assert os.environ[ENV.MILVUS_TOKEN] == "secret:milvus/MILVUS_TOKEN"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "secret:s3/AWS_SECRET_ACCESS_KEY"
    assert batch_worker.build_parser().parse_args([]).partial_exit_code == 0


def test_every_env_name_the_operator_writes_is_in_the_contract():
    ij = make_ij(ledger={"redisSecretRef": {"name": "redis"}})
    job = build_job(ij, "handbook-1", inline_target(ij.spec), OperatorDefaults())
    names = {item["name"] for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    contract = {value for key, value in vars(ENV).items() if key.isupper()}
    source_secrets = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert names - source_secrets <= contract, sorted(names - source_secrets - contract)
