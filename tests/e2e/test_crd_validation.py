"""The generated CRDs against a real kube-apiserver: the examples are accepted, invalid specs are
rejected with a message that says what is wrong (OpenAPI constraints and the CEL rules, which only
the API server evaluates), and `kubectl explain` shows the model's descriptions.

Uses the `kube` and `namespace` fixtures of tests/harness/cluster.py; crds/ is already applied.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.manifests import with_path
from tributary_operator.api import IngestionJob, IngestionJobStatus, IngestionPhase

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = ["embeddingindex.yaml", "ingestionjob.yaml", "streampipeline.yaml"]
# Run end to end in test_embeddingindex (the index and the load) and test_streampipeline.
LOCAL_EXAMPLES = ["local/embeddingindex.yaml", "local/ingestionjob.yaml", "local/streampipeline.yaml"]


def example(name: str) -> dict[str, Any]:
    """The example's custom resource (a local example may carry the Secret it needs before it)."""
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d["kind"] != "Secret"][0]


def get(kube, namespace: str, resource: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("get", "-n", namespace, resource, name, "-o", "yaml").stdout
    return yaml.safe_load(out)


@pytest.mark.parametrize("name", EXAMPLE_FILES + LOCAL_EXAMPLES)
def test_example_applies_cleanly(kube, namespace, name):
    kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "secrets.yaml"))
    kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / name))
    manifest = example(name)
    stored = get(kube, namespace, manifest["kind"].lower(), manifest["metadata"]["name"])
    assert _contains(stored, manifest)


def _contains(stored: Any, sent: Any) -> bool:
    """Everything sent was stored (the API server only adds defaults)."""
    if isinstance(sent, dict):
        return all(key in stored and _contains(stored[key], value) for key, value in sent.items())
    return stored == sent


def test_stored_objects_carry_the_schema_defaults(kube, namespace):
    kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "ingestionjob.yaml"))
    spec = get(kube, namespace, "ij", "handbook-nightly")["spec"]
    assert (spec["mode"], spec["suspend"], spec["successfulRunsHistoryLimit"]) == ("update", False, 3)


def test_get_tributary_lists_all_kinds(kube, namespace):
    for name in EXAMPLE_FILES:
        kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / name))
    out = kube.kubectl("get", "tributary", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == [
        "embeddingindex.tributary.dev/handbook",
        "ingestionjob.tributary.dev/handbook-nightly",
        "streampipeline.tributary.dev/handbook-updates",
    ]
    table = kube.kubectl("get", "ij", "-n", namespace).stdout.splitlines()[0].split()
    assert table == ["NAME", "PHASE", "PROGRESS", "ETA", "SUCCEEDED", "FAILED", "AGE"]


def test_status_written_from_the_model_is_accepted_and_parses_back(kube, namespace):
    kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "ingestionjob.yaml"))
    now = datetime.now(UTC)
    status = IngestionJobStatus(
        phase=IngestionPhase.RUNNING,
        progress="42/100",
        documents_total=100,
        shards=[{"index": 0, "phase": "Running", "documents_done": 42}],
        failures=[{"doc_id": "guide/setup.md", "reason": "PdfReadError: EOF marker not found"}],
        conditions=[{"type": "Ready", "status": "False", "reason": "Running", "last_transition_time": now}],
        start_time=now,
        observed_generation=1,
    )
    patch = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    kube.kubectl(
        "patch", "-n", namespace, "ij", "handbook-nightly",
        "--subresource=status", "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip
    stored = IngestionJob.from_body(get(kube, namespace, "ij", "handbook-nightly"))
    assert stored.status == status
    row = kube.kubectl("get", "ij", "handbook-nightly", "-n", namespace, "--no-headers").stdout
    assert row.split()[1:3] == ["Running", "42/100"]


INLINE_TARGET = {
    "milvusUri": "http://milvus:19530",
    "collection": "handbook",
    "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384},
}

# (example file, dotted path, value, fragments the API server's error must contain)
INVALID = [
    ("ingestionjob.yaml", "spec.source", None, ["spec.source", "Required value"]),
    ("ingestionjob.yaml", "spec.parallelism", 0, ["spec.parallelism", "greater than or equal to 1"]),
    ("ingestionjob.yaml", "spec.mode", "turbo", ["spec.mode", 'supported values: "initialLoad", "update"']),
    ("ingestionjob.yaml", "spec.schedule", "every night", ["spec.schedule", "should match"]),
    ("ingestionjob.yaml", "spec.schedule", "0 2 * *", ["spec.schedule", "should match"]),
    (
        "ingestionjob.yaml",
        "spec.target.inline",
        INLINE_TARGET,
        ["spec.target", "exactly one of target.indexRef or target.inline must be set"],
    ),
    (
        "ingestionjob.yaml",
        "spec.mode",
        "initialLoad",
        ["spec.mode", "mode initialLoad cannot be combined with a schedule"],
    ),
    (
        "ingestionjob.yaml",
        "spec.source.uri",
        "/data/handbook",
        ["spec.source.uri", "source.uri must start with s3:// when source.type is s3"],
    ),
    (
        "ingestionjob.yaml",
        "spec.source.urls",
        ["https://example.com/handbook.html"],
        ["spec.source", "exactly one of source.uri or source.urls must be set"],
    ),
    (
        "streampipeline.yaml",
        "spec.replicas",
        {"min": 5, "max": 2},
        ["spec.replicas.min", "replicas.min must not exceed replicas.max"],
    ),
    (
        "streampipeline.yaml",
        "spec.backpressure",
        {"highWatermark": 1000, "lowWatermark": 1000},
        ["spec.backpressure.lowWatermark", "lowWatermark must be less than backpressure.highWatermark"],
    ),
    (
        "streampipeline.yaml",
        "spec.scaling.scaleToZero",
        False,
        ["spec.replicas.min", "replicas.min may be 0 only when scaling.scaleToZero is true"],
    ),
    (
        "embeddingindex.yaml",
        "spec.chunking",
        {"maxTokens": 128, "overlapTokens": 128},
        ["spec.chunking.overlapTokens", "chunking.overlapTokens must be less than chunking.maxTokens"],
    ),
    # Gaps that once reached the operator and failed only in its log: now refused at admission.
    ("ingestionjob.yaml", "spec.schedule", "99 99 * * *", ["spec.schedule", "should match"]),
    ("ingestionjob.yaml", "spec.schedule", "0 24 * * *", ["spec.schedule", "should match"]),
    ("ingestionjob.yaml", "spec.worker.resources.requests.cpu", "lots", ["spec.worker.resources.requests.cpu", "should match"]),
    ("ingestionjob.yaml", "spec.worker.env", {"A=B": "x"}, ["spec.worker.env", "worker.env names must be environment variable names"]),
    (
        "ingestionjob.yaml",
        "spec.source",
        {"type": "local", "uri": "s3://example-handbook/docs/"},
        ["spec.source.uri", "source.uri must be a path (or file://) when source.type is local"],
    ),
    ("ingestionjob.yaml", "metadata.name", "h" * 64, ["metadata.name must be at most 63 characters"]),
    ("streampipeline.yaml", "metadata.name", "s" * 57, ["metadata.name must be at most 56 characters"]),
    (
        "streampipeline.yaml",
        "spec.replicas",
        {"min": 1, "max": 8},
        ["spec.scaling.scaleToZero", "scaling.scaleToZero needs replicas.min 0"],
    ),
    (
        "embeddingindex.yaml",
        "spec.model.name",
        "intfloat/e5-small-v2",
        ["spec.model.name", "model.name must be the bundled sentence-transformers/all-MiniLM-L6-v2"],
    ),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "fragments"),
    INVALID,
    ids=[f"{name.split('.')[0]}-{path}={value!r}"[:60] for name, path, value, _ in INVALID],
)
def test_invalid_spec_is_rejected_with_a_clear_message(kube, namespace, name, path, value, fragments):
    manifest = with_path(example(name), path, value)
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert result.returncode != 0, f"accepted: {manifest}"
    for fragment in fragments:
        assert fragment in result.stderr


def test_explain_shows_the_model_descriptions(kube):
    deadline = time.monotonic() + 60  # the OpenAPI document is published shortly after Established
    while True:
        result = kube.kubectl("explain", "ingestionjob.spec.parallelism", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stderr
    assert "Number of shards: the documents are split across this many worker pods" in text
