"""The tributary.dev/v1alpha1 API: IngestionJob, StreamPipeline and EmbeddingIndex.

These pydantic models are the single source of truth for the API. The CRD manifests in crds/ are
generated from them (``python -m tributary_operator.crdgen crds/``), the operator parses custom
resource bodies with them (``IngestionJob.from_body(body)``), and every field description here is
what ``kubectl explain`` prints.

Conventions: Python attributes are snake_case, the JSON/YAML names camelCase. Cross-field rules are
declared once per model as ``CelRule``s: the generator emits them as ``x-kubernetes-validations``
(enforced by the API server) and the models enforce the same rule in Python, so a manifest that
parses here is one the API server accepts. Credentials are only ever referenced through Secrets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel
from tributary_workers.contract import defaults as shared

GROUP = "tributary.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tributary"

# Kubernetes object names (DNS-1123 subdomain), Secret keys, and Milvus collection/alias names.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
MILVUS_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _cron_field(number: str) -> str:
    """One cron field: a comma list of `*`, N or N-M, each with an optional /step, values in range."""
    item = rf"(\*|{number}(-{number})?)(/[1-9][0-9]{{0,2}})?"
    return rf"{item}(,{item})*"


# Five cron fields with every value in its range (minute, hour, day of month, month, day of week;
# names allowed for months and days), or one of the macros. The API server refuses '99 99 * * *';
# croniter checks the same schedules again in Python.
CRON = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r"\s+".join([
        _cron_field(r"[0-5]?[0-9]"),
        _cron_field(r"([01]?[0-9]|2[0-3])"),
        rf"(\?|{_cron_field(r'(0?[1-9]|[12][0-9]|3[01])')})",
        _cron_field(r"(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"),
        rf"(\?|{_cron_field(r'([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))')})",
    ])
    + r")$"
)
# Kubernetes resource quantities (the API server's own pattern for resource.Quantity).
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
# Environment variable names Kubernetes accepts (no '=', not starting with a digit).
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# The bundled model's names; anything else must be an absolute path inside the worker image.
BUNDLED_MODELS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")

ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_KEY)]
MilvusName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=MILVUS_NAME)]
Uri = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Text = Annotated[str, StringConstraints(max_length=1024)]


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule, kept next to the model it constrains.

    ``rule`` is the CEL expression the API server evaluates with ``self`` bound to the object;
    ``check`` is the same rule over the Python model, so both paths reject the same manifests with
    the same ``message``. ``field_path`` (e.g. ``".min"``) points the API server's error at a field.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        schema = {"rule": self.rule, "message": self.message}
        if self.field_path:
            schema["fieldPath"] = self.field_path
        return schema


def _add_cel_rules(schema: dict[str, Any], model: type) -> None:
    rules = getattr(model, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, CEL rules applied."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_cel_rules,
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


# --------------------------------------------------------------------------- shared building blocks


class SecretRef(ApiModel):
    """A Secret in the resource's namespace whose keys are handed to the workers as environment
    variables."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace as this resource.")
    keys: list[SecretKey] | None = Field(
        None,
        max_length=64,
        description="Keys of the Secret to use; every key of the Secret when omitted.",
    )


class RedisSecretRef(ApiModel):
    """A Secret key holding a Redis URL, so the URL (and any password in it) never sits in a spec."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace as this resource.")
    key: SecretKey = Field(
        "url",
        description="Key of the Secret whose value is the Redis URL (redis:// or rediss://).",
    )


class EmbeddingIndexRef(ApiModel):
    """A reference to an EmbeddingIndex in the same namespace."""

    name: ObjectName = Field(description="Name of the EmbeddingIndex, in the same namespace.")


class ImagePullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


Quantity = int | Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY)]


class ResourceRequirements(ApiModel):
    """Compute resources of a container, as in Kubernetes' ResourceRequirements."""

    requests: dict[str, Quantity] | None = Field(
        None, description="Minimum resources the container needs, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        None, description="Most resources the container may use, e.g. {cpu: 2, memory: 2Gi}."
    )


class WorkerTemplate(ApiModel):
    """How the worker pods run; everything not set here comes from the operator's defaults."""

    cel_rules = (
        CelRule(
            rule=f"!has(self.env) || self.env.all(name, name.matches('{ENV_NAME}'))",
            message="worker.env names must be environment variable names (letters, digits, '_', '-', "
            "'.'; no '=', not starting with a digit)",
            check=lambda w: not w.env or all(re.match(ENV_NAME, name) for name in w.env),
            field_path=".env",
        ),
    )

    image: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Worker container image; the operator's default worker image when omitted.",
    )
    image_pull_policy: ImagePullPolicy | None = Field(
        None,
        description="Image pull policy of the worker container (Always, IfNotPresent or Never); "
        "Kubernetes' default for the image tag when omitted.",
    )
    resources: ResourceRequirements | None = Field(
        None,
        description="Compute resources of the worker container (requests, limits), each a "
        "Kubernetes quantity such as 500m, 2 or 1Gi.",
    )
    env: dict[str, Annotated[str, StringConstraints(max_length=32768)]] | None = Field(
        None,
        description="Extra environment variables for the worker container, name to value. Never "
        "put credentials here: use the credentialsSecretRef fields.",
    )
    service_account_name: ObjectName | None = Field(
        None,
        description="ServiceAccount the worker pods run as; the operator's worker account "
        "(tributary-worker, created by the Helm chart) when omitted.",
    )


class EmbeddingModel(ApiModel):
    """The sentence-embedding model that turns chunks into vectors."""

    cel_rules = (
        CelRule(
            rule="self.name in " + "[" + ", ".join(f"'{m}'" for m in BUNDLED_MODELS) + "] || self.name.startsWith('/')",
            message="model.name must be the bundled sentence-transformers/all-MiniLM-L6-v2 or an absolute "
            "path to a model directory in the worker image (models are never downloaded)",
            check=lambda m: m.name in BUNDLED_MODELS or m.name.startswith("/"),
            field_path=".name",
        ),
        CelRule(
            rule="!has(self.quantize) || self.quantize == 'none' || (has(self.backend) && self.backend == 'onnx')",
            message="model.quantize int8 needs model.backend onnx",
            check=lambda m: m.quantize in (None, "none") or m.backend == "onnx",
            field_path=".quantize",
        ),
    )

    name: str = Field(
        min_length=1,
        max_length=1024,
        description="The bundled model's id, sentence-transformers/all-MiniLM-L6-v2 (or "
        "all-MiniLM-L6-v2), or the path of a sentence-transformers model directory inside the worker "
        "image or a mounted volume. Models are never downloaded: any other Hugging Face id fails the "
        "run with the reason.",
    )
    dimension: int | None = Field(
        None,
        ge=1,
        le=32768,
        description="Expected length of the model's embedding vectors (384 for all-MiniLM-L6-v2). "
        "When set, a worker whose model produces another length stops with that reason instead of "
        "writing; the collection's vector field always takes the model's own length.",
    )
    revision: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Reserved, not yet used: models load from a local path or the bundled "
        "package, never from a hub, so no revision is fetched.",
    )
    max_sequence_length: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Maximum number of tokens the model reads per chunk, below the model's own "
        "limit: chunks are sized to it (maxTokens defaults to it). The model's own limit when omitted "
        "or larger.",
    )
    backend: Literal["torch", "onnx"] | None = Field(
        None,
        description=f"What runs the model: onnx (ONNX Runtime on a graph exported locally from the same "
        f"weights, at first use, never downloaded) or torch (sentence-transformers' PyTorch encode). "
        f"Omitted: {shared.BACKEND}. Both give the same vectors (cosine >= 0.99) and may share a "
        "collection, so changing it is not a re-embedding; on a GPU without ONNX Runtime's CUDA "
        "provider onnx falls back to torch.",
    )
    quantize: Literal["none", "int8"] | None = Field(
        None,
        description="int8: dynamic int8 weights (backend onnx only), faster on CPU but measurably "
        "different vectors, so a collection records it with the model id and changing it is a "
        "re-embedding. Omitted: none (opt-in: its top-10 retrieval overlap with fp32 is below 0.95 "
        "on the project's sample).",
    )


class Chunking(ApiModel):
    """How documents are split into chunks before embedding."""

    cel_rules = (
        CelRule(
            rule="!has(self.maxTokens) || self.overlapTokens < self.maxTokens",
            message="chunking.overlapTokens must be less than chunking.maxTokens",
            check=lambda c: c.max_tokens is None or c.overlap_tokens < c.max_tokens,
            field_path=".overlapTokens",
        ),
    )

    max_tokens: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Maximum number of tokens per chunk, counted with the model's own tokenizer. "
        "When omitted, the model's limit (its maximum sequence length minus its special tokens); "
        "a larger value is refused rather than silently truncated.",
    )
    overlap_tokens: int = Field(
        shared.OVERLAP_TOKENS,
        ge=0,
        le=65535,
        description="Tokens shared by consecutive chunks of a document; must be less than maxTokens.",
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One observation of an aspect of the resource's state, in the Kubernetes condition shape."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="Type of the condition in CamelCase, e.g. Ready, Progressing or Degraded.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str | None = Field(
        None, max_length=32768, description="Human-readable details about the last transition."
    )
    last_transition_time: datetime | None = Field(
        None, description="When the condition last changed status."
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the condition was computed from."
    )


class ObservedStatus(ApiModel):
    """Status fields every kind shares."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="Current conditions of the resource, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


@dataclass(frozen=True)
class PrinterColumn:
    """An additionalPrinterColumns entry: what ``kubectl get`` shows."""

    name: str
    json_path: str
    type: str
    description: str
    priority: int = 0


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since the resource was created.")


@dataclass(frozen=True)
class CrdNames:
    """Naming and presentation of a kind's CRD."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def name_fits(max_length: int, why: str) -> CelRule:
    """A rule on metadata.name: short enough that every child name and label value derived from it fits."""
    return CelRule(
        rule=f"!has(self.metadata.name) || size(self.metadata.name) <= {max_length}",
        message=f"metadata.name must be at most {max_length} characters ({why})",
        check=lambda r: len(r.metadata.get("name") or "") <= max_length,
    )


class CustomResource(ApiModel):
    """The envelope of a tributary.dev object; subclasses type ``kind``, ``spec`` and ``status``."""

    crd: ClassVar[CrdNames]

    api_version: Literal["tributary.dev/v1alpha1"] = Field(
        API_VERSION,
        description="APIVersion defines the versioned schema of this representation of an object. "
        "Servers should convert recognized schemas to the latest internal value, and may reject "
        "unrecognized values. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Standard object metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse a custom resource body, e.g. kopf's ``body``; ``metadata`` stays a plain dict."""
        return cls.model_validate(plain_data(body))


KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. "
    "More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)


def plain_data(value: Any) -> Any:
    """Copy read-only mapping views (kopf's Body, Spec, ...) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    return value
