"""EmbeddingIndex provisioning logic, table-driven: collection names, change kinds, adoption."""

from __future__ import annotations

import copy
import re

import pytest
from tributary_operator.api.v1alpha1 import EmbeddingIndexSpec
from tributary_operator.api.v1alpha1.schema import MILVUS_NAME
from tributary_operator.core.embeddingindex import (
    ESSENCE_FIELDS,
    IN_PLACE_FIELDS,
    PLACE_FIELDS,
    AdoptAction,
    ChangeKind,
    ExistingAlias,
    adoption,
    classify_change,
    collection_name,
    model_id,
)
from tributary_workers.contract.defaults import DEFAULT_MODEL_ID

BASE = {"milvus": {"uri": "http://milvus:19530"}, "alias": "handbook",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"}}


def make(**changes) -> EmbeddingIndexSpec:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return EmbeddingIndexSpec.model_validate(data)


def test_name_is_alias_and_eight_hex_and_stable():
    name = collection_name(make())
    assert re.fullmatch(r"handbook_[0-9a-f]{8}", name)
    assert name == collection_name(make())  # deterministic across calls (and processes: sha256)
    assert name == collection_name(make(model__name="all-MiniLM-L6-v2"))  # one model, two spellings


def test_long_alias_fits_milvus_limit_and_stays_distinct():
    a, b = "a" * 250 + "x", "a" * 250 + "y"
    na, nb = collection_name(make(alias=a)), collection_name(make(alias=b))
    assert len(na) <= 255 and re.fullmatch(MILVUS_NAME, na)
    assert na != nb


CHANGES = [
    # (name, change, kind, differing fields)
    ("nothing", {}, ChangeKind.NONE, ()),
    ("model", {"model__name": "/models/e5"}, ChangeKind.REEMBED, ("model",)),
    ("revision", {"model__revision": "v2"}, ChangeKind.REEMBED, ("model",)),
    ("sequence length", {"model__maxSequenceLength": 128}, ChangeKind.REEMBED, ("model",)),
    ("chunk size", {"chunking__maxTokens": 200}, ChangeKind.REEMBED, ("chunking",)),
    ("overlap", {"chunking__overlapTokens": 0}, ChangeKind.REEMBED, ("chunking",)),
    ("index type", {"index__indexType": "HNSW"}, ChangeKind.REEMBED, ("index",)),
    ("index params", {"index__params": {"M": 16}}, ChangeKind.REEMBED, ("index",)),
    ("metric", {"index__metricType": "L2"}, ChangeKind.REEMBED, ("index",)),
    ("expected dimension", {"model__dimension": 384}, ChangeKind.IN_PLACE, ("model",)),  # a check only
    ("model spelling", {"model__name": "all-MiniLM-L6-v2"}, ChangeKind.IN_PLACE, ("model",)),
    ("serving replicas", {"serving__replicas": 2}, ChangeKind.IN_PLACE, ("serving",)),
    ("validation", {"validation__minDocumentRatio": 0.5}, ChangeKind.IN_PLACE, ("validation",)),
    ("retention", {"retention__keepPrevious": False}, ChangeKind.IN_PLACE, ("retention",)),
    ("milvus", {"milvus__uri": "http://other:19530"}, ChangeKind.RELOCATE, ("milvus",)),
    ("alias", {"alias": "manual"}, ChangeKind.RELOCATE, ("alias",)),
]


@pytest.mark.parametrize(("change", "kind", "fields"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_classify_change(change, kind, fields):
    new = make(**change)
    got = classify_change(make(), new)
    assert (got.kind, got.fields) == (kind, fields)
    assert (collection_name(new) != collection_name(make())) is (kind in (ChangeKind.REEMBED, ChangeKind.RELOCATE)
                                                                 and "milvus" not in fields)


def test_every_spec_field_has_a_change_kind():
    named = set(ESSENCE_FIELDS) | set(IN_PLACE_FIELDS) | set(PLACE_FIELDS)
    assert named == set(EmbeddingIndexSpec.model_fields)
    assert len(named) == len(ESSENCE_FIELDS) + len(IN_PLACE_FIELDS) + len(PLACE_FIELDS)


def test_model_id_is_the_bundled_id_or_the_model_folders_name():
    # What a worker records for the bundled model. For a local folder a worker records
    # "<folder name>@<digest of its files>" (resolve_model), which the operator cannot compute: it
    # never reads model files; the provisioning Job reports the recorded id back.
    assert model_id("all-MiniLM-L6-v2") == DEFAULT_MODEL_ID
    assert model_id("/models/e5-small/") == "e5-small"


RECORDED = {"tributary.model_id": DEFAULT_MODEL_ID, "tributary.dimension": "384"}

ADOPTIONS = [
    # (name, spec change, existing, action, reason, message parts)
    ("no alias: create", {}, ExistingAlias(None), AdoptAction.CREATE, "Provisioning", ["creating collection"]),
    ("matching: adopt", {}, ExistingAlias("legacy", RECORDED, 384), AdoptAction.ADOPT, "Adopted",
     ["legacy", "dimension 384", "its name is kept"]),
    ("matching with declared dimension", {"model__dimension": 384}, ExistingAlias("legacy", RECORDED, 384),
     AdoptAction.ADOPT, "Adopted", []),
    ("other model", {}, ExistingAlias("legacy", {**RECORDED, "tributary.model_id": "e5-small"}, 384),
     AdoptAction.CONFLICT, "ModelMismatch", ["holds model e5-small", DEFAULT_MODEL_ID, "never repointed"]),
    ("other dimension", {"model__dimension": 768}, ExistingAlias("legacy", RECORDED, 384),
     AdoptAction.CONFLICT, "DimensionMismatch", ["dimension 384", "expects 768"]),
    ("both differ", {"model__dimension": 768},
     ExistingAlias("legacy", {**RECORDED, "tributary.model_id": "e5-small"}, 384),
     AdoptAction.CONFLICT, "ModelMismatch", ["e5-small", "expects 768"]),
    ("not a tributary collection", {}, ExistingAlias("foreign", {}, 384), AdoptAction.CONFLICT,
     "UnrecordedModel", ["records no tributary.model_id"]),
    ("recorded and actual dimension disagree", {}, ExistingAlias("legacy", RECORDED, 768), AdoptAction.CONFLICT,
     "DimensionMismatch", ["disagrees"]),
]


@pytest.mark.parametrize(("change", "existing", "action", "reason", "parts"), [a[1:] for a in ADOPTIONS],
                         ids=[a[0] for a in ADOPTIONS])
def test_adoption(change, existing, action, reason, parts):
    s = make(**change)
    got = adoption(s, existing)
    assert (got.action, got.reason) == (action, reason), got.message
    for part in parts:
        assert part in got.message
    assert got.collection == (collection_name(s) if existing.collection is None else existing.collection)


def test_adopting_our_own_collection_says_nothing_about_its_name():
    s = make()
    got = adoption(s, ExistingAlias(collection_name(s), RECORDED, 384))
    assert got.action == AdoptAction.ADOPT and "name is kept" not in got.message
