"""A served EmbeddingIndex for e2e tests: applied to the test's namespace and waited on until Ready.

    ready_index  (function)  ServedIndex(name, alias, collection, milvus_uri): an EmbeddingIndex on the
                             session's milvus-lite server, provisioned by the operator (its first
                             collection created and the alias pointing at it), phase Ready.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
import yaml

from harness.waiting import wait_for

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ServedIndex:
    name: str
    alias: str
    collection: str
    milvus_uri: str


def embedding_index(name: str, alias: str, milvus_uri: str, **spec) -> dict:
    return {
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "EmbeddingIndex",
        "metadata": {"name": name},
        "spec": {
            "milvus": {"uri": milvus_uri},
            "alias": alias,
            "model": {"name": MODEL, "dimension": 384},
            "chunking": {"maxTokens": 64, "overlapTokens": 8},
            "index": {"metricType": "COSINE", "indexType": "AUTOINDEX"},
            **spec,
        },
    }


def get_index(kube, namespace: str, name: str) -> dict:
    return json.loads(kube.kubectl("-n", namespace, "get", "embeddingindex", name, "-o", "json").stdout)


def wait_index_phase(kube, namespace: str, name: str, phases, timeout: float = 120) -> dict:
    return wait_for(lambda: (ei := get_index(kube, namespace, name)).get("status", {}).get("phase") in phases and ei,
                    timeout=timeout, interval=0.5, message=f"EmbeddingIndex {name} phase in {phases}")


@pytest.fixture
def ready_index(kube, namespace, operator, local_node, milvus_server) -> ServedIndex:
    name, alias = "handbook", f"handbook_{uuid.uuid4().hex[:8]}"
    kube.kubectl("-n", namespace, "apply", "-f", "-",
                 input=yaml.safe_dump(embedding_index(name, alias, milvus_server.uri)))
    ei = wait_index_phase(kube, namespace, name, {"Ready", "Failed"})
    assert ei["status"]["phase"] == "Ready", ei["status"]
    return ServedIndex(name, alias, ei["status"]["activeCollection"], milvus_server.uri)
