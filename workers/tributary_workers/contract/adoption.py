"""Brownfield adoption of a Milvus alias, shared by both planes.

The provisioning Job (``tributary-index-admin provision``) decides with these rules what it does in
Milvus, and the operator reads the same words back from the Job's termination message. An alias
that already exists is adopted only when its collection records the spec's model and dimension (the
collection properties tributary writers record); otherwise a Conflict that says what differs. An
alias is never silently repointed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum

# The collection properties a tributary writer records (tributary_workers/pipeline/writer.py).
MODEL_PROPERTY = "tributary.model_id"
DIMENSION_PROPERTY = "tributary.dimension"


@dataclass(frozen=True)
class ExistingAlias:
    """What Milvus says of the spec's alias: the collection it points at and what that records."""

    collection: str | None  # None: no such alias
    properties: Mapping[str, str] = field(default_factory=dict)  # the collection's properties
    vector_dimension: int | None = None  # the vector field's dim, from describe_collection


class AdoptAction(StrEnum):
    CREATE = "Create"
    ADOPT = "Adopt"
    CONFLICT = "Conflict"


@dataclass(frozen=True)
class Adoption:
    action: AdoptAction
    collection: str  # the collection to create or adopt; the one in the way for a conflict
    reason: str
    message: str
    model: str | None = None  # the model the collection holds (Create/Adopt)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "action": self.action.value}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Adoption:
        data = json.loads(text)
        return cls(AdoptAction(data["action"]), data["collection"], data["reason"], data["message"],
                   data.get("model"))


def adoption(alias: str, new_collection: str, model_id: str, dimension: int | None,
             existing: ExistingAlias) -> Adoption:
    """Create ``new_collection`` and point the alias at it, adopt what the alias already serves, or
    refuse (never repoint). ``dimension`` None: the spec expects none in particular."""
    if existing.collection is None:
        return Adoption(AdoptAction.CREATE, new_collection, "Provisioning",
                        f"creating collection {new_collection} and alias {alias} pointing at it", model_id)
    props = existing.properties
    recorded_model = props.get(MODEL_PROPERTY)
    recorded_dim = props.get(DIMENSION_PROPERTY)
    where = f"alias {alias} points at collection {existing.collection}"
    problems: list[str] = []
    reason = "Conflict"
    if recorded_model is None:
        reason = "UnrecordedModel"
        problems.append(f"it records no {MODEL_PROPERTY}, so the model of its vectors is unknown")
    elif recorded_model != model_id:
        reason = "ModelMismatch"
        problems.append(f"it holds model {recorded_model}, the spec asks for {model_id}")
    dims = {int(d) for d in (recorded_dim, existing.vector_dimension) if d is not None}
    if len(dims) > 1:
        problems.append(f"its {DIMENSION_PROPERTY} {recorded_dim} disagrees with its vector field's "
                        f"dimension {existing.vector_dimension}")
        reason = "DimensionMismatch" if reason == "Conflict" else reason
    elif dimension is not None and dims and dimension not in dims:
        problems.append(f"its vectors have dimension {next(iter(dims))}, the spec expects {dimension}")
        reason = "DimensionMismatch" if reason == "Conflict" else reason
    if problems:
        return Adoption(AdoptAction.CONFLICT, existing.collection, reason,
                        f"{where}, but {'; and '.join(problems)}: not adopted and never repointed; point "
                        f"the alias at a matching collection, drop it, or choose another alias")
    dim = next(iter(dims), None)
    holds = f"{where}, which holds model {recorded_model}" + (f" at dimension {dim}" if dim is not None else "")
    if existing.collection == new_collection:  # made for this very spec (a re-run, or a lost race)
        return Adoption(AdoptAction.ADOPT, existing.collection, "Provisioned", holds, recorded_model)
    return Adoption(AdoptAction.ADOPT, existing.collection, "Adopted", f"{holds}: adopted (its name is kept)",
                    recorded_model)
