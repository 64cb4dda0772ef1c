"""Pre-flight checks, the Ready condition they set, and the Events that follow (table-driven, no cluster)."""

from __future__ import annotations

import pytest
from tributary_operator.api.v1alpha1 import EmbeddingIndex, IngestionJob
from tributary_operator.core.conditions import ConditionSpec, EventSpec, ready_event
from tributary_operator.core.ingestion import OperatorDefaults, compute_status, rejected_before
from tributary_operator.core.ingestion.checks import Dependencies, Problem, preflight, secret_needs

DEFAULTS = OperatorDefaults()


def make_ij(**spec):
    base = {
        "source": {"type": "s3", "uri": "s3://docs/", "credentialsSecretRef": {"name": "s3", "keys": ["AWS_KEY"]}},
        "target": {"indexRef": {"name": "handbook"}},
        "ledger": {"redisSecretRef": {"name": "redis"}},
    }
    base.update(spec)
    return IngestionJob.from_body({"metadata": {"name": "nightly", "namespace": "rag", "generation": 2},
                                   "spec": base})


def make_index(active: str | None = "handbook_1a2b3c4d", token_secret: str | None = "milvus"):
    milvus = {"uri": "http://milvus:19530"}
    if token_secret:
        milvus["credentialsSecretRef"] = {"name": token_secret}
    return EmbeddingIndex.from_body({
        "metadata": {"name": "handbook", "namespace": "rag"},
        "spec": {"milvus": milvus, "alias": "handbook", "model": {"name": "all-MiniLM-L6-v2"}},
        "status": {"activeCollection": active} if active else {},
    })


ALL_THERE = Dependencies(
    secrets={"s3": frozenset({"AWS_KEY"}), "redis": frozenset({"url"}), "milvus": frozenset({"MILVUS_TOKEN"})},
    service_accounts={"tributary-worker": True},
    index=make_index(),
)


def without(deps: Dependencies, **changes) -> Dependencies:
    return Dependencies(**{"secrets": deps.secrets, "service_accounts": deps.service_accounts, "index": deps.index,
                           **changes})


CASES = [
    ("everything present", make_ij(), ALL_THERE, None),
    ("index missing", make_ij(), without(ALL_THERE, index=None),
     ("IndexNotFound", "EmbeddingIndex handbook (spec.target.indexRef) not found")),
    ("index without collection", make_ij(), without(ALL_THERE, index=make_index(active=None)),
     ("IndexNotReady", "EmbeddingIndex handbook has no active collection yet")),
    ("source secret missing", make_ij(), without(ALL_THERE, secrets={**ALL_THERE.secrets, "s3": None}),
     ("SecretNotFound", "Secret s3 (source.credentialsSecretRef) not found")),
    ("index token secret missing", make_ij(), without(ALL_THERE, secrets={**ALL_THERE.secrets, "milvus": None}),
     ("SecretNotFound", "Secret milvus (EmbeddingIndex handbook milvus.credentialsSecretRef) not found")),
    ("ledger key missing", make_ij(), without(ALL_THERE, secrets={**ALL_THERE.secrets, "redis": frozenset({"URL"})}),
     ("SecretKeyMissing", "Secret redis (ledger.redisSecretRef) has no key url")),
    ("service account missing", make_ij(), without(ALL_THERE, service_accounts={}),
     ("ServiceAccountNotFound", "ServiceAccount tributary-worker (the operator's worker account")),
    ("own service account missing", make_ij(worker={"serviceAccountName": "ingest"}), ALL_THERE,
     ("ServiceAccountNotFound", "ServiceAccount ingest (spec.worker.serviceAccountName) not found")),
    ("index before secrets", make_ij(), without(ALL_THERE, index=None, service_accounts={}), ("IndexNotFound", "")),
]


@pytest.mark.parametrize(("case", "ij", "deps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_preflight_names_the_first_missing_dependency(case, ij, deps, expected):
    problem = preflight(ij, deps, DEFAULTS)
    if expected is None:
        assert problem is None
    else:
        assert problem.reason == expected[0] and expected[1] in problem.message, problem


def test_secret_needs_follow_the_spec():
    needs = {(n.name, n.keys, n.field) for n in secret_needs(make_ij(), make_index())}
    assert needs == {("s3", frozenset({"AWS_KEY"}), "source.credentialsSecretRef"),
                     ("milvus", frozenset({"MILVUS_TOKEN"}), "EmbeddingIndex handbook milvus.credentialsSecretRef"),
                     ("redis", frozenset({"url"}), "ledger.redisSecretRef")}


def test_a_problem_is_ready_false_with_its_reason_and_message():
    problem = Problem("SecretNotFound", "Secret s3 (source.credentialsSecretRef) not found")
    fields, conditions = compute_status(make_ij(), None, {}, problem)
    by_type = {c.type: c for c in conditions}
    assert fields["phase"] == "Pending"
    assert (by_type["Ready"].status, by_type["Ready"].reason, by_type["Ready"].message) == (
        False, "SecretNotFound", problem.message)
    assert by_type["Progressing"].status is False


READY = "Ready"
EVENTS = [
    ("first failure warns", None, ConditionSpec(READY, False, "SecretNotFound", "Secret s3 not found"),
     EventSpec("Warning", "SecretNotFound", "Secret s3 not found")),
    ("the same failure again is quiet", {"type": READY, "status": "False", "reason": "SecretNotFound"},
     ConditionSpec(READY, False, "SecretNotFound", "Secret s3 not found"), None),
    ("a new cause warns again", {"type": READY, "status": "False", "reason": "SecretNotFound"},
     ConditionSpec(READY, False, "ServiceAccountNotFound", "no SA"), EventSpec("Warning", "ServiceAccountNotFound", "no SA")),
    ("progress is quiet", None, ConditionSpec(READY, False, "Running", "run r: 0/2 shards done"), None),
    ("recovery is announced", {"type": READY, "status": "False", "reason": "SecretNotFound"},
     ConditionSpec(READY, False, "Running", "run r: 0/2 shards done"),
     EventSpec("Normal", "Recovered", "SecretNotFound resolved: run r: 0/2 shards done")),
    ("a failed run warns", {"type": READY, "status": "False", "reason": "Running"},
     ConditionSpec(READY, False, "RunFailed", "run r failed"), EventSpec("Warning", "RunFailed", "run r failed")),
]


@pytest.mark.parametrize(("case", "old", "new", "event"), EVENTS, ids=[c[0] for c in EVENTS])
def test_one_event_per_change_of_cause(case, old, new, event):
    assert ready_event([old] if old else [], [new]) == event


def test_a_refused_child_is_not_sent_again_for_the_same_generation():
    refused = {"conditions": [{"type": "Ready", "status": "False", "reason": "ChildRejected",
                               "message": "the API server refused Job x: bad", "observedGeneration": 2}]}
    assert rejected_before(refused, 2).reason == "ChildRejected"
    assert rejected_before(refused, 3) is None  # the spec changed: try again
    assert rejected_before({}, 2) is None
