"""StreamPipeline, pure: the worker Deployment, what to patch into it, routing targets and pre-flight."""

from __future__ import annotations

import json

import pytest
from tributary_operator.api.v1alpha1 import EmbeddingIndex, StreamPipeline
from tributary_operator.core.pods import OperatorDefaults
from tributary_operator.core.streampipeline import checks, manifests
from tributary_operator.core.targets import index_target
from tributary_workers.contract import defaults as shared
from tributary_workers.streaming.config import StreamConfig

INDEX_SPEC = {"milvus": {"uri": "http://milvus:19530", "credentialsSecretRef": {"name": "milvus-creds"}},
              "alias": "handbook", "model": {"name": shared.DEFAULT_MODEL_ID, "dimension": 384},
              "chunking": {"maxTokens": 128, "overlapTokens": 16}, "index": {"indexType": "HNSW", "params": {"M": 8}}}
SP_SPEC = {"indexRef": {"name": "handbook"},
           "queue": {"redisSecretRef": {"name": "redis", "key": "url"}, "stream": "docs", "group": "g1"},
           "batching": {"maxBatchSize": 16, "maxWaitMs": 20}, "retry": {"maxDeliveries": 3, "claimIdleMs": 5000}}


def index(status=None, **spec) -> EmbeddingIndex:
    return EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "ns"},
                                     "spec": {**INDEX_SPEC, **spec},
                                     "status": {"activeCollection": "handbook_1a2b3c4d"} if status is None else status})


def pipeline(**spec) -> StreamPipeline:
    return StreamPipeline.from_body({"metadata": {"name": "live", "namespace": "ns", "generation": 2},
                                     "spec": {**SP_SPEC, **spec}})


def deployment(sp=None, ei=None, replicas=2) -> dict:
    ei = ei or index()
    return manifests.build_worker_deployment(sp or pipeline(), ei, index_target(ei), OperatorDefaults(), replicas)


def env_of(dep: dict) -> dict:
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_deployment_runs_the_stream_worker_with_the_spec_as_env():
    dep = deployment()
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {k: v.get("value") for k, v in env_of(dep).items()}
    assert dep["metadata"]["name"] == "live-worker" and dep["spec"]["replicas"] == 2
    assert container["command"] == ["tributary-stream-worker"]
    assert (env["TRIBUTARY_INDEX"], env["TRIBUTARY_COLLECTION"]) == ("handbook", "handbook_1a2b3c4d")
    assert (env["TRIBUTARY_STREAM"], env["TRIBUTARY_GROUP"], env["TRIBUTARY_DEAD_LETTER_STREAM"]) == (
        "docs", "g1", "docs:dead")
    assert (env["TRIBUTARY_MAX_BATCH_SIZE"], env["TRIBUTARY_MAX_WAIT_MS"]) == ("16", "20")
    assert (env["TRIBUTARY_MAX_DELIVERIES"], env["TRIBUTARY_CLAIM_IDLE_MS"]) == ("3", "5000")
    assert (env["TRIBUTARY_MAX_TOKENS"], env["TRIBUTARY_OVERLAP_TOKENS"]) == ("128", "16")
    assert (env["TRIBUTARY_INDEX_TYPE"], json.loads(env["TRIBUTARY_INDEX_PARAMS"])) == ("HNSW", {"M": 8})
    assert "TRIBUTARY_MODEL" not in env  # the bundled model needs no path
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert container["securityContext"]["runAsNonRoot"] and pod["serviceAccountName"] == "tributary-worker"


def test_every_env_name_is_one_the_worker_reads():
    """The names come from the contract: each is a flag's env of tributary-stream-worker."""
    from tributary_workers.cli import stream_worker

    # Flags say their env in their help; the token and POD_NAME are read from the environment only.
    helps = " ".join(a.help or "" for a in stream_worker.build_parser()._actions) + stream_worker.__doc__
    for name in env_of(deployment()):
        assert name == "POD_NAME" or name in helps, name


def test_credentials_only_by_reference():
    env = env_of(deployment())
    assert env["TRIBUTARY_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "url", "optional": False}
    assert env["TRIBUTARY_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "milvus-creds"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert all("value" not in env[k] for k in ("TRIBUTARY_REDIS_URL", "TRIBUTARY_MILVUS_TOKEN"))


def test_grace_period_outlasts_the_drain():
    dep = deployment()
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = float(env_of(dep)["TRIBUTARY_DRAIN_TIMEOUT_S"]["value"])
    assert grace == shared.TERMINATION_GRACE_PERIOD_S
    # The worker's watchdog exits 1 s after the drain timeout: that must come before SIGKILL.
    assert drain + 1 < grace and drain == shared.drain_timeout_for_grace(grace)


def test_labels_and_selector():
    dep = deployment()
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == {"tributary.dev/streampipeline": "live", "app.kubernetes.io/component": "stream-worker"}
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tributary-operator"


def test_worker_template_settings_and_extra_env():
    sp = pipeline(worker={"image": "registry.local/tributary:dev", "imagePullPolicy": "Never",
                          "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}, "env": {"HF_HOME": "/tmp/hf"},
                          "serviceAccountName": "streamer"})
    dep = deployment(sp)
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == ("registry.local/tributary:dev", "Never")
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert env_of(dep)["HF_HOME"]["value"] == "/tmp/hf" and pod["serviceAccountName"] == "streamer"


PATCHES = [
    # (name, change to the pipeline spec, replicas owned, replicas, expected patch keys under spec)
    ("nothing changed", {}, True, 2, None),
    ("replicas only", {}, True, 3, {"replicas"}),
    ("hpa owns replicas", {}, False, 3, None),
    ("template changed", {"batching": {"maxBatchSize": 64}}, True, 2, {"template", "strategy"}),
    ("template and replicas", {"batching": {"maxBatchSize": 64}}, True, 1, {"template", "strategy", "replicas"}),
    ("scaling is not the template", {"scaling": {"targetLagPerReplica": 10}}, True, 2, None),
]


@pytest.mark.parametrize(("name", "change", "own", "replicas", "keys"), PATCHES, ids=[p[0] for p in PATCHES])
def test_deployment_patch(name, change, own, replicas, keys):
    existing = deployment(replicas=2)
    wanted = deployment(pipeline(**change), replicas=replicas)
    patch = manifests.deployment_patch(existing, wanted, replicas=replicas if own else None)
    assert (set(patch["spec"]) if patch else None) == keys


def test_template_patch_carries_the_new_hash():
    wanted = deployment(pipeline(batching={"maxBatchSize": 64}))
    patch = manifests.deployment_patch(deployment(), wanted, replicas=None)
    assert patch["metadata"]["annotations"][manifests.TEMPLATE_HASH] == wanted["metadata"]["annotations"][
        manifests.TEMPLATE_HASH] != deployment()["metadata"]["annotations"][manifests.TEMPLATE_HASH]


def test_routing_targets_each_carry_the_model_and_chunking_of_their_collection():
    assert manifests.routing_targets(index()) == [
        {"collection": "handbook_1a2b3c4d", "max_tokens": 128, "overlap_tokens": 16, "dimension": 384}]
    old = {"model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384},
           "chunking": {"maxTokens": 64, "overlapTokens": 8}}
    both = index(status={"activeCollection": "handbook_1a2b3c4d", "candidateCollection": "handbook_99999999",
                         "activeSpec": old}, model={"name": "/models/e5", "dimension": 256})
    active, candidate = manifests.routing_targets(both)
    # the active keeps what it was built with while the spec already names the candidate's model
    assert active == {"collection": "handbook_1a2b3c4d", "max_tokens": 64, "overlap_tokens": 8, "dimension": 384}
    assert candidate == {"collection": "handbook_99999999", "model": "/models/e5", "max_tokens": 128,
                         "overlap_tokens": 16, "dimension": 256, "create": True}  # only the candidate is created
    assert manifests.routing_index(both) == "handbook"
    swapped = index(status={"activeCollection": "handbook_99999999", "previousCollection": "handbook_1a2b3c4d",
                            "previousSpec": old}, model={"name": "/models/e5", "dimension": 256})
    assert [(t["collection"], t.get("create")) for t in manifests.routing_targets(swapped)] == [
        ("handbook_99999999", None), ("handbook_1a2b3c4d", None)]  # kept for a rollback that loses nothing
    retiring = index(status={"activeCollection": "handbook_99999999", "previousCollection": "handbook_1a2b3c4d",
                             "previousSpec": old, "retiring": True})
    assert [t["collection"] for t in manifests.routing_targets(retiring)] == ["handbook_99999999"]

def test_worker_settings_parse_as_the_worker_would(monkeypatch):
    """The Deployment's env, fed to the worker's own parser, gives the pipeline's settings."""
    from tributary_workers.cli.stream_worker import build_parser, config_from_args

    for name, entry in env_of(deployment()).items():
        monkeypatch.setenv(name, entry.get("value", "redis://r:6379/0" if "REDIS" in name else "x"))
    config = config_from_args(build_parser().parse_args([]))
    assert isinstance(config, StreamConfig)
    assert (config.stream, config.group, config.max_batch_size, config.max_deliveries) == ("docs", "g1", 16, 3)
    assert config.consumer == "x"  # POD_NAME


PREFLIGHT = [
    # (name, index, secrets, service account, reason)
    ("no index", None, {}, True, "IndexNotFound"),
    ("index not ready", index(status={}), {}, True, "IndexNotReady"),
    ("no redis secret", index(), {"milvus-creds": frozenset({"MILVUS_TOKEN"})}, True, "SecretNotFound"),
    ("redis key missing", index(), {"redis": frozenset({"uri"}), "milvus-creds": frozenset({"MILVUS_TOKEN"})}, True,
     "SecretKeyMissing"),
    ("milvus token missing", index(), {"redis": frozenset({"url"}), "milvus-creds": frozenset()}, True,
     "SecretKeyMissing"),
    ("no service account", index(), {"redis": frozenset({"url"}), "milvus-creds": frozenset({"MILVUS_TOKEN"})}, False,
     "ServiceAccountNotFound"),
    ("all there", index(), {"redis": frozenset({"url"}), "milvus-creds": frozenset({"MILVUS_TOKEN"})}, True, None),
]


@pytest.mark.parametrize(("name", "ei", "secrets", "account", "reason"), PREFLIGHT, ids=[p[0] for p in PREFLIGHT])
def test_preflight(name, ei, secrets, account, reason):
    problem = checks.preflight(pipeline(), checks.Dependencies(ei, secrets, account), OperatorDefaults())
    assert (problem.reason if problem else None) == reason
    if problem is not None:
        assert problem.message  # says what is missing


def test_the_index_backend_reaches_the_workers():
    ei = index(model={"name": shared.DEFAULT_MODEL_ID, "dimension": 384, "backend": "onnx", "quantize": "int8"})
    env = {k: v.get("value") for k, v in env_of(deployment(ei=ei)).items()}
    assert (env["TRIBUTARY_BACKEND"], env["TRIBUTARY_QUANTIZE"]) == ("onnx", "int8")
