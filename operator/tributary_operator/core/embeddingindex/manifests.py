"""EmbeddingIndex manifests: the provisioning Job that creates or adopts the first collection.

The operator never talks to Milvus: `tributary-index-admin provision` does, in a Job whose pod gets
the Milvus token by Secret reference and writes its outcome (contract.adoption.Adoption as JSON) to
its termination message, where the operator reads it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tributary_workers.contract import defaults as shared
from tributary_workers.contract import env as ENV
from tributary_workers.contract.exits import EXIT_PERMANENT

from tributary_operator.api.v1alpha1 import EmbeddingIndex, EmbeddingIndexSpec, EmbeddingModel
from tributary_operator.core.embeddingindex.naming import collection_name, essence_hash
from tributary_operator.core.pods import OperatorDefaults
from tributary_operator.core.pods import RESTRICTED_POD, TERMINATION_LOG, container_security, env_var, secret_env_var

LABEL_INDEX = "tributary.dev/embeddingindex"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "index-admin"
TOKEN_KEY = "MILVUS_TOKEN"
# Milvus unreachable: retried by the Job controller with its back-off (10 s doubling to 6 min);
# once spent, the operator replaces the Job and the back-off starts again.
BACKOFF_LIMIT = 12
MAX_JOB_NAME = 63  # the Job's name labels its pods


def spec_hash(spec: EmbeddingIndexSpec) -> str:
    """What the active collection was made for: the essence and the place (Milvus, database, alias)."""
    place = {"uri": spec.milvus.uri, "database": spec.milvus.database, "essence": essence_hash(spec)}
    return hashlib.sha256(json.dumps(place, sort_keys=True).encode()).hexdigest()[:8]


def provision_job_name(ei: EmbeddingIndex) -> str:
    suffix = f"-provision-{spec_hash(ei.spec)}"
    return f"{ei.metadata['name'][:MAX_JOB_NAME - len(suffix)]}{suffix}"


def model_env(model: EmbeddingModel) -> list[dict[str, Any]]:
    """The model settings a worker reads (the default model, backend and quantization left out)."""
    env = []
    if model.name != shared.DEFAULT_MODEL_ID:
        env.append(env_var(ENV.MODEL, model.name))
    if model.dimension is not None:
        env.append(env_var(ENV.DIMENSION, model.dimension))
    if model.quantize is not None:  # the recorded model id includes it (contract.encoder)
        env.append(env_var(ENV.QUANTIZE, model.quantize))
    if model.backend is not None:
        env.append(env_var(ENV.BACKEND, model.backend))
    if model.max_sequence_length is not None:
        env.append(env_var(ENV.MAX_SEQUENCE_LENGTH, model.max_sequence_length))
    return env


def milvus_env(spec: EmbeddingIndexSpec) -> list[dict[str, Any]]:
    """Where Milvus is, with the token by Secret reference, and the index a collection is built with."""
    env = [
        env_var(ENV.MILVUS_URI, spec.milvus.uri),
        env_var(ENV.METRIC_TYPE, spec.index.metric_type.value),
        env_var(ENV.INDEX_TYPE, spec.index.index_type.value),
        env_var(ENV.REPLICAS, spec.serving.replicas),
        env_var(ENV.REPORT_FILE, TERMINATION_LOG),
    ]
    if spec.index.params:
        env.append(env_var(ENV.INDEX_PARAMS, json.dumps(spec.index.params, sort_keys=True)))
    if spec.milvus.database:
        env.append(env_var(ENV.MILVUS_DATABASE, spec.milvus.database))
    if spec.milvus.credentials_secret_ref is not None:
        env.append(secret_env_var(ENV.MILVUS_TOKEN, spec.milvus.credentials_secret_ref.name, TOKEN_KEY))
    return env


def provision_env(spec: EmbeddingIndexSpec) -> list[dict[str, Any]]:
    return [env_var(ENV.ALIAS, spec.alias), env_var(ENV.COLLECTION, collection_name(spec)),
            *milvus_env(spec), *model_env(spec.model)]


def admin_job(ei: EmbeddingIndex, name: str, component: str, args: list[str], env: list[dict[str, Any]],
              defaults: OperatorDefaults, completions: int = 1) -> dict[str, Any]:
    """A Job running `tributary-index-admin <args>` for the index; Indexed with several completions."""
    labels = {LABEL_INDEX: ei.metadata["name"], LABEL_COMPONENT: component}
    container = {
        "name": "admin",
        "image": defaults.worker_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["tributary-index-admin", *args],
        "env": env,
        "securityContext": container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        # Milvus unreachable writes no report but one line on stderr: that line becomes the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "backoffLimit": BACKOFF_LIMIT,
        # A conflict or a bad setting: no retry fixes it, so the Job fails at once.
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "admin", "operator": "In",
                                                  "values": [EXIT_PERMANENT]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": dict(RESTRICTED_POD),
                "serviceAccountName": defaults.service_account,
                "containers": [container],
            },
        },
    }
    if completions > 1:
        spec.update(completionMode="Indexed", completions=completions, parallelism=completions)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ei.metadata["namespace"], "labels": labels},
        "spec": spec,
    }


def build_provision_job(ei: EmbeddingIndex, defaults: OperatorDefaults) -> dict[str, Any]:
    return admin_job(ei, provision_job_name(ei), COMPONENT, ["provision"], provision_env(ei.spec), defaults)
