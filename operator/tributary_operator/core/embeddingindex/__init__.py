"""EmbeddingIndex, pure: collection names and spec changes (naming), the provisioning Job
(manifests), and what to do about it (policy). The blue-green lifecycle, once an active collection
exists: lifecycle (its entry), reembed, upkeep, observed; its step Jobs: steps."""

from tributary_operator.core.embeddingindex.manifests import (
    COMPONENT,
    LABEL_INDEX,
    build_provision_job,
    provision_job_name,
    spec_hash,
)
from tributary_operator.core.embeddingindex.naming import (
    DIMENSION_PROPERTY,
    ESSENCE_FIELDS,
    IN_PLACE_FIELDS,
    MODEL_PROPERTY,
    PLACE_FIELDS,
    AdoptAction,
    Adoption,
    ChangeKind,
    ExistingAlias,
    SpecChange,
    adoption,
    classify_change,
    collection_name,
    essence,
    essence_hash,
    model_id,
)
from tributary_operator.core.embeddingindex.policy import Action, IndexPlan, ProvisionView, plan

__all__ = [
    "COMPONENT", "DIMENSION_PROPERTY", "ESSENCE_FIELDS", "IN_PLACE_FIELDS", "LABEL_INDEX", "MODEL_PROPERTY", "PLACE_FIELDS",
    "Action", "AdoptAction", "Adoption", "ChangeKind", "ExistingAlias", "IndexPlan", "ProvisionView", "SpecChange",
    "adoption", "build_provision_job", "classify_change", "collection_name", "essence", "essence_hash", "model_id",
    "plan", "provision_job_name", "spec_hash",
]
