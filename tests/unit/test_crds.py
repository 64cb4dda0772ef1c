"""The CRDs in crds/ are generated from the pydantic models, structural, documented and in sync,
and the examples/ manifests are valid against both the generated schema and the models."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kopf
import pydantic
import pytest
import yaml
from harness.manifests import with_path
from tributary_operator import crdgen
from tributary_operator.api import (
    API_VERSION,
    RESOURCES,
    EmbeddingIndex,
    IngestionJob,
    IngestionJobSpec,
    StreamPipeline,
)

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples"
KINDS = {resource.crd.kind: resource for resource in RESOURCES}


def generated() -> dict[str, dict[str, Any]]:
    """Kind -> generated CRD manifest."""
    return {kind: crdgen.crd_manifest(resource) for kind, resource in KINDS.items()}


def schema_of(kind: str) -> dict[str, Any]:
    return generated()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` (inclusive), with a readable path."""
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def example_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every tributary.dev object in examples/."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"] == API_VERSION:
                docs.append((path.name, doc))
    return docs


def example(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for _, doc in example_docs() if doc["kind"] == kind))


# ------------------------------------------------------------------------------------ generation


def test_committed_crds_match_the_models():
    assert crdgen.drift(CRDS) == [], "crds/ is stale: run `make crds`"
    assert crdgen.drift(ROOT / crdgen.CHART_CRDS) == [], "the chart's crds/ is stale: run `make crds`"
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == [
        "embeddingindexes.tributary.dev.yaml",
        "ingestionjobs.tributary.dev.yaml",
        "streampipelines.tributary.dev.yaml",
    ]


def test_generation_is_deterministic_across_processes(tmp_path):
    for seed in ("1", "2"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-m", "tributary_operator.crdgen", str(out)], check=True, env=env
        )
        assert {p.name: p.read_text() for p in out.iterdir()} == crdgen.manifests()


def test_check_passes_on_committed_files_and_reports_drift(tmp_path, capsys):
    assert crdgen.main(["--check", str(CRDS)]) == 0

    crdgen.main([str(tmp_path)])
    edited = tmp_path / "ingestionjobs.tributary.dev.yaml"
    edited.write_text(edited.read_text().replace("maximum: 256", "maximum: 512"))
    (tmp_path / "embeddingindexes.tributary.dev.yaml").unlink()
    (tmp_path / "oldthings.tributary.dev.yaml").write_text("kind: CustomResourceDefinition\n")

    assert crdgen.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-                maximum: 512" in out and "+                maximum: 256" in out
    assert "embeddingindexes.tributary.dev.yaml (generated)" in out
    assert "oldthings.tributary.dev.yaml: no model generates this file" in out


def test_the_chart_next_to_the_output_gets_identical_copies(tmp_path, capsys):
    chart = tmp_path / "charts" / "tributary"
    chart.mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tributary\nversion: 0.1.0\n")
    assert crdgen.main([str(tmp_path / "crds")]) == 0
    assert {p.name: p.read_text() for p in (chart / "crds").iterdir()} == crdgen.manifests()

    (chart / "crds" / "ingestionjobs.tributary.dev.yaml").unlink()
    assert crdgen.main(["--check", str(tmp_path / "crds")]) == 1
    assert f"CRDs in {chart / 'crds'} are out of date" in capsys.readouterr().err


# ------------------------------------------------------------------------------- CRD shape


@pytest.mark.parametrize(
    ("kind", "plural", "short", "columns"),
    [
        ("IngestionJob", "ingestionjobs", "ij", ["Phase", "Progress", "ETA", "Succeeded", "Failed", "Age"]),
        ("StreamPipeline", "streampipelines", "sp", ["Phase", "Replicas", "Desired", "Backlog", "Age"]),
        ("EmbeddingIndex", "embeddingindexes", "ei", ["Phase", "Alias", "Active", "Candidate", "Done", "Age"]),
    ],
)
def test_names_subresources_and_printer_columns(kind, plural, short, columns):
    crd = generated()[kind]
    assert crd["metadata"]["name"] == f"{plural}.tributary.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (kind, plural, [short])
    assert names["categories"] == ["tributary"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    default_columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert default_columns == columns


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind):
    for path, node in walk(schema_of(kind)):
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"} & set(node), path
        free_form = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or free_form, f"{path} has no type"
        assert node.get("additionalProperties", True) is not False, path
        assert not ("additionalProperties" in node and "properties" in node), path
        assert node.get("default", "") is not None, f"{path} has a null default"


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_has_a_description(kind):
    undocumented = [
        f"{path}.{name}"
        for path, node in walk(schema_of(kind))
        for name, prop in node.get("properties", {}).items()
        if not prop.get("description") and f"{path}.{name}" != ".metadata"
    ]  # the API server forbids anything but a type on metadata; explain shows ObjectMeta's docs
    assert undocumented == []


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_satisfy_their_own_schema(kind):
    for path, node in walk(schema_of(kind)):
        if "default" in node:
            errors = [e.message for e in jsonschema.Draft4Validator(node).iter_errors(node["default"])]
            assert errors == [], path


def test_preserve_unknown_fields_only_on_free_form_maps():
    preserved = {
        (kind, path)
        for kind in KINDS
        for path, node in walk(schema_of(kind))
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    # worker.resources is typed: quantities; the status records the spec's index as it was
    assert preserved == {("EmbeddingIndex", f"{at}.index.params") for at in (".spec", ".status.activeSpec",
                                                                               ".status.previousSpec")}


def test_cel_rules_are_emitted_where_the_models_declare_them():
    rules = {
        (kind, path): [rule["rule"] for rule in node["x-kubernetes-validations"]]
        for kind in KINDS
        for path, node in walk(schema_of(kind))
        if "x-kubernetes-validations" in node
    }
    name_63 = "!has(self.metadata.name) || size(self.metadata.name) <= 63"
    model = "self.name in ['sentence-transformers/all-MiniLM-L6-v2', 'all-MiniLM-L6-v2'] || self.name.startsWith('/')"
    quantize = "!has(self.quantize) || self.quantize == 'none' || (has(self.backend) && self.backend == 'onnx')"
    env = "!has(self.env) || self.env.all(name, name.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$'))"
    assert rules == {
        ("IngestionJob", ""): [name_63],
        ("IngestionJob", ".spec"): ["!(has(self.schedule) && self.mode == 'initialLoad')",
                                     "!has(self.prune) || !self.prune.enabled || has(self.ledger)"],
        ("IngestionJob", ".spec.source"): [
            "has(self.uri) != has(self.urls)",
            "!has(self.urls) || self.type == 'http'",
            "self.type != 's3' || !has(self.uri) || self.uri.startsWith('s3://')",
            "self.type != 'local' || !has(self.uri) || !self.uri.contains('://') || self.uri.startsWith('file://')",
            "self.type != 'http' || !has(self.uri) || self.uri.matches('^https?://')",
        ],
        ("IngestionJob", ".spec.target"): ["has(self.indexRef) != has(self.inline)"],
        ("IngestionJob", ".spec.target.inline.chunking"): ["!has(self.maxTokens) || self.overlapTokens < self.maxTokens"],
        ("IngestionJob", ".spec.target.inline.model"): [model, quantize],
        ("IngestionJob", ".spec.worker"): [env],
        ("IngestionJob", ".spec.checkpoint"): [
            "(self.backend == 'redis') == has(self.redisSecretRef)"
        ],
        ("StreamPipeline", ""): ["!has(self.metadata.name) || size(self.metadata.name) <= 56"],
        ("StreamPipeline", ".spec"): [
            "!self.scaling.scaleToZero || self.replicas.min == 0",
            "self.replicas.min > 0 || self.scaling.scaleToZero",
        ],
        ("StreamPipeline", ".spec.queue"): [
            "!has(self.deadLetterStream) || self.deadLetterStream != self.stream"
        ],
        ("StreamPipeline", ".spec.replicas"): ["self.min <= self.max"],
        ("StreamPipeline", ".spec.worker"): [env],
        ("StreamPipeline", ".spec.backpressure"): ["self.lowWatermark < self.highWatermark"],
        ("EmbeddingIndex", ""): [name_63],
        ("EmbeddingIndex", ".spec"): ["!has(self.drift) || has(self.ledger)"],
        ("EmbeddingIndex", ".spec.model"): [model, quantize],
        ("EmbeddingIndex", ".spec.chunking"): ["!has(self.maxTokens) || self.overlapTokens < self.maxTokens"],
        **{("EmbeddingIndex", f".status.{kept}.model"): [model, quantize] for kept in ("activeSpec", "previousSpec")},
        **{("EmbeddingIndex", f".status.{kept}.chunking"): ["!has(self.maxTokens) || self.overlapTokens < self.maxTokens"]
           for kept in ("activeSpec", "previousSpec")},
        ("EmbeddingIndex", ".spec.validation"): [
            "!has(self.minRecallAtK) || (has(self.sampleQueries) && size(self.sampleQueries) > 0)"
        ],
    }


def test_constraints_come_from_the_field_definitions():
    spec = schema_of("IngestionJob")["properties"]["spec"]
    assert spec["required"] == ["source", "target"]
    parallelism = spec["properties"]["parallelism"]
    assert (parallelism["minimum"], parallelism["maximum"], parallelism["default"]) == (1, 256, 1)
    assert spec["properties"]["mode"]["enum"] == ["initialLoad", "update"]
    assert spec["properties"]["concurrencyPolicy"]["default"] == "Forbid"
    assert spec["properties"]["suspend"] == {
        "default": False,
        "description": spec["properties"]["suspend"]["description"],
        "type": "boolean",
    }
    status = schema_of("IngestionJob")["properties"]["status"]["properties"]
    assert status["failures"]["maxItems"] == 20
    assert status["conditions"]["items"]["properties"]["status"]["enum"] == [
        "True",
        "False",
        "Unknown",
    ]


def test_unions_become_structural_types():
    class Sample(pydantic.BaseModel):
        """A sample."""

        port: int | str = pydantic.Field(description="A port number or name.")
        limit: int | None = pydantic.Field(None, gt=0, description="An optional positive limit.")

    props = crdgen.structural_schema(Sample.model_json_schema())["properties"]
    assert props["port"] == {"description": "A port number or name.", "x-kubernetes-int-or-string": True}
    assert props["limit"] == {
        "description": "An optional positive limit.",
        "exclusiveMinimum": True,
        "minimum": 0,
        "type": "integer",
    }


def test_unsupported_schema_is_refused():
    class Sample(pydantic.BaseModel):
        tags: set[str] = pydantic.Field(description="uniqueItems is not allowed in a CRD.")

    with pytest.raises(ValueError, match="uniqueItems"):
        crdgen.structural_schema(Sample.model_json_schema())


# -------------------------------------------------------------------------------- examples


def test_every_kind_has_an_example():
    assert sorted(doc["kind"] for _, doc in example_docs()) == sorted(KINDS)


@pytest.mark.parametrize(("name", "doc"), example_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_is_valid_against_the_generated_schema(name, doc):
    jsonschema.Draft4Validator(schema_of(doc["kind"])).validate(doc)


@pytest.mark.parametrize(("name", "doc"), example_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_round_trips_through_the_model(name, doc):
    resource = KINDS[doc["kind"]].from_body(doc)
    assert resource.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc


def test_from_body_parses_a_kopf_body():
    body = kopf.Body(example("IngestionJob"))
    job = IngestionJob.from_body(body)
    assert job.spec.target.index_ref.name == "handbook"
    assert job.spec.source.include == ["**/*.md", "**/*.pdf", "**/*.html"]
    assert job.metadata == {"name": "handbook-nightly"}
    assert job.status.phase is None and job.status.conditions == []


def test_from_body_rejects_another_kind():
    with pytest.raises(pydantic.ValidationError):
        StreamPipeline.from_body(example("IngestionJob"))


def test_a_minimal_spec_gets_the_documented_defaults():
    spec = IngestionJobSpec.model_validate(
        {"source": {"type": "local", "uri": "/data"}, "target": {"indexRef": {"name": "docs"}}}
    )
    assert (spec.mode, spec.parallelism, spec.suspend, spec.concurrency_policy) == (
        "update",
        1,
        False,
        "Forbid",
    )


# ------------------------------------------------------------------- invalid specs are rejected


INLINE_TARGET = {
    "milvusUri": "http://milvus:19530",
    "collection": "docs",
    "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384},
}

# (kind, dotted path, value, message from the model); CEL-only rules have no schema error.
INVALID = [
    ("IngestionJob", "spec.source", None, "Field required"),
    ("IngestionJob", "spec.parallelism", 0, "greater than or equal to 1"),
    ("IngestionJob", "spec.mode", "turbo", "'initialLoad' or 'update'"),
    ("IngestionJob", "spec.schedule", "every night", "should match pattern"),
    ("IngestionJob", "spec.schedule", "61 * * * *", "should match pattern"),
    ("IngestionJob", "spec.schedule", "99 99 * * *", "should match pattern"),
    ("IngestionJob", "spec.worker.env", {"A=B": "x"}, "worker.env names must be environment variable names"),
    ("IngestionJob", "spec.worker.resources", {"requests": {"cpu": "lots"}}, "should match pattern"),
    ("IngestionJob", "spec.source", {"type": "local", "uri": "s3://bucket/docs"}, "must be a path"),
    ("EmbeddingIndex", "spec.model.name", "intfloat/e5-small", "bundled"),
    ("StreamPipeline", "spec.replicas", {"min": 1, "max": 3}, "scaling.scaleToZero needs replicas.min 0"),
    ("IngestionJob", "metadata.name", "x" * 64, "at most 63 characters"),
    ("IngestionJob", "spec.target.inline", INLINE_TARGET, "exactly one of target.indexRef or"),
    ("IngestionJob", "spec.mode", "initialLoad", "cannot be combined with a schedule"),
    ("IngestionJob", "spec.source.uri", "https://example.com/", "must start with s3://"),
    ("IngestionJob", "spec.source.urls", ["https://example.com/"], "exactly one of source.uri or"),
    ("IngestionJob", "spec.source", {"type": "s3", "urls": ["https://a/"]}, "only allowed when"),
    ("IngestionJob", "spec.source", {"type": "http", "uri": "ftp://a/"}, "http:// or https://"),
    ("IngestionJob", "spec.checkpoint", {"backend": "redis"}, "redisSecretRef must be set"),
    ("IngestionJob", "spec.source.credentialsSecretRef.password", "x", "Extra inputs"),
    ("StreamPipeline", "spec.replicas", {"min": 5, "max": 2}, "must not exceed replicas.max"),
    ("StreamPipeline", "spec.backpressure.lowWatermark", 50000, "lowWatermark must be less"),
    ("StreamPipeline", "spec.scaling.scaleToZero", False, "only when scaling.scaleToZero"),
    ("StreamPipeline", "spec.queue.deadLetterStream", "handbook:events", "must differ"),
    ("EmbeddingIndex", "spec.chunking.overlapTokens", 256, "overlapTokens must be less than"),
    ("EmbeddingIndex", "spec.index.metricType", "cosine", "'COSINE', 'IP' or 'L2'"),
    ("EmbeddingIndex", "spec.validation.minRecallAtK", 0.9, "needs validation.sampleQueries"),
]


@pytest.mark.parametrize(("kind", "path", "value", "message"), INVALID)
def test_invalid_spec_is_rejected_by_the_model(kind, path, value, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        KINDS[kind].from_body(with_path(example(kind), path, value))


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("IngestionJob", "spec.source", None),
        ("IngestionJob", "spec.parallelism", 0),
        ("IngestionJob", "spec.parallelism", 257),
        ("IngestionJob", "spec.mode", "turbo"),
        ("IngestionJob", "spec.schedule", "every night"),
        ("IngestionJob", "spec.target.indexRef.name", "Not_A_DNS_Name"),
        ("EmbeddingIndex", "spec.index.metricType", "cosine"),
        ("EmbeddingIndex", "spec.model.dimension", 0),
    ],
)
def test_invalid_spec_is_rejected_by_the_schema(kind, path, value):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema_of(kind)).validate(with_path(example(kind), path, value))


def test_embedding_index_with_defaults_only():
    index = EmbeddingIndex.model_validate(
        {
            "metadata": {"name": "docs"},
            "spec": {
                "milvus": {"uri": "http://milvus:19530"},
                "alias": "docs",
                "model": {"name": "all-MiniLM-L6-v2", "dimension": 8},
            },
        }
    )
    assert index.spec.chunking.max_tokens is None  # the model's own limit
    assert index.spec.chunking.overlap_tokens == 32
    assert index.spec.validation.min_document_ratio == 0.99
