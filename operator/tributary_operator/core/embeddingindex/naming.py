"""EmbeddingIndex provisioning, pure: the collection's name, what a spec change needs, brownfield adoption.

- The collection is named from the spec's essence (what changes the vectors or how they are found):
  the model (its id, revision, sequence length: everything but the expected dimension, a check), the
  chunking, and the index (type, params, metric). Same essence, same name; any change, a new one.
- A change of the essence needs a re-embedding into a new collection; serving replicas, validation
  and retention apply in place; a new Milvus connection or alias is a new place altogether.
- An alias that already exists is adopted only when its collection records the spec's model and
  dimension (tributary_workers.contract.adoption, applied by the provisioning Job).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from tributary_workers.contract.adoption import (
    DIMENSION_PROPERTY,
    MODEL_PROPERTY,
    AdoptAction,
    Adoption,
    ExistingAlias,
)
from tributary_workers.contract.adoption import adoption as adopt
from tributary_workers.contract.defaults import DEFAULT_MODEL_ID
from tributary_workers.contract.encoder import encoder_id

from tributary_operator.api.v1alpha1 import EmbeddingIndexSpec
from tributary_operator.api.v1alpha1.schema import BUNDLED_MODELS

__all__ = ["DIMENSION_PROPERTY", "MODEL_PROPERTY", "AdoptAction", "Adoption", "ExistingAlias"]

MILVUS_NAME_LIMIT = 255
HASH_LENGTH = 8



def model_id(name: str, quantize: str | None = None) -> str:
    """The id a worker records for a model name: the bundled id, or the model directory's name;
    with the quantization when it changes the vectors (contract.encoder)."""
    base = DEFAULT_MODEL_ID if name in BUNDLED_MODELS else PurePosixPath(name).name
    return encoder_id(base, "onnx", quantize) if quantize not in (None, "none") else base


def essence(spec: EmbeddingIndexSpec) -> dict[str, Any]:
    """What the vectors depend on. Unset fields are left out, so a new optional field added to the
    API later does not rename (and re-embed) every existing index."""
    # The backend is not essence (torch and fp32 ONNX make the same vectors); int8 is.
    model = spec.model.model_dump(mode="json", exclude={"dimension", "backend"}, exclude_none=True, by_alias=True)
    if model.get("quantize") == "none":
        del model["quantize"]
    if spec.model.name in BUNDLED_MODELS:  # one model, two spellings: one name
        model["name"] = DEFAULT_MODEL_ID
    return {
        "model": model,
        "chunking": spec.chunking.model_dump(mode="json", exclude_none=True, by_alias=True),
        "index": spec.index.model_dump(mode="json", exclude_none=True, by_alias=True),
    }


def essence_hash(spec: EmbeddingIndexSpec) -> str:
    data = {"alias": spec.alias, **essence(spec)}  # the alias too: truncated aliases must not collide
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:HASH_LENGTH]


def collection_name(spec: EmbeddingIndexSpec) -> str:
    """<alias>_<8 hex>, the alias shortened to fit Milvus' 255 characters."""
    return f"{spec.alias[:MILVUS_NAME_LIMIT - HASH_LENGTH - 1]}_{essence_hash(spec)}"


class ChangeKind(StrEnum):
    NONE = "None"
    IN_PLACE = "InPlace"  # serving replicas, validation thresholds, retention
    REEMBED = "Reembed"  # model, chunking or index: a new collection, built and swapped to
    RELOCATE = "Relocate"  # another Milvus or another alias: not a change of this collection


# Fields by what a change of them needs; every spec field is in exactly one (a unit test checks).
IN_PLACE_FIELDS = ("serving", "validation", "retention", "ledger", "reembedding", "drift")
ESSENCE_FIELDS = ("model", "chunking", "index")
PLACE_FIELDS = ("milvus", "alias")


@dataclass(frozen=True)
class SpecChange:
    kind: ChangeKind
    fields: tuple[str, ...] = ()  # the camelCase spec fields that differ


def classify_change(old: EmbeddingIndexSpec, new: EmbeddingIndexSpec) -> SpecChange:
    """What going from ``old`` to ``new`` takes; the most demanding kind wins."""
    before, after = old.model_dump(mode="json", by_alias=True), new.model_dump(mode="json", by_alias=True)
    aliases = {name: field.alias or name for name, field in EmbeddingIndexSpec.model_fields.items()}
    differ = tuple(aliases[name] for name in EmbeddingIndexSpec.model_fields
                   if before.get(aliases[name]) != after.get(aliases[name]))
    if not differ:
        return SpecChange(ChangeKind.NONE)
    if any(aliases[f] in differ for f in PLACE_FIELDS):
        return SpecChange(ChangeKind.RELOCATE, differ)
    if collection_name(old) != collection_name(new):
        return SpecChange(ChangeKind.REEMBED, differ)
    # Essence fields that differ only in spelling (all-MiniLM-L6-v2 vs its full id) rename nothing.
    return SpecChange(ChangeKind.IN_PLACE, differ)


# --- brownfield adoption (the rules live in the contract: the provisioning Job applies them) -----


def adoption(spec: EmbeddingIndexSpec, existing: ExistingAlias) -> Adoption:
    """Create the first collection, adopt what the alias already serves, or refuse (never repoint)."""
    return adopt(spec.alias, collection_name(spec), model_id(spec.model.name, spec.model.quantize), spec.model.dimension, existing)
