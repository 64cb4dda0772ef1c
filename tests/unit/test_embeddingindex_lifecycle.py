"""EmbeddingIndex's blue-green lifecycle, pure: table tests of decide() over what the Jobs and the
StreamPipelines show."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from tributary_operator.api.v1alpha1 import EmbeddingIndex
from tributary_operator.core.embeddingindex import collection_name, model_id, spec_hash
from tributary_operator.core.embeddingindex.lifecycle import PipelineRouting, StepJob, decide, retire_due
from tributary_operator.core.embeddingindex.steps import StepRequest, build_step_job, step_job_name
from tributary_operator.core.pods import OperatorDefaults
from tributary_workers.contract.reembed import Gate, GateName, Step, StepReport

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
OLD = {"model": {"name": "sentence-transformers/all-MiniLM-L6-v2"}, "chunking": {"maxTokens": 64, "overlapTokens": 8}}
NEW_MODEL = {"name": "/models/derived", "dimension": 256}
BASE = {"milvus": {"uri": "http://milvus:19530"}, "alias": "handbook", **OLD,
        "ledger": {"redisSecretRef": {"name": "redis"}}}


def index(status=None, **spec) -> EmbeddingIndex:
    return EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "ns", "generation": 2},
                                     "spec": {**BASE, **spec}, "status": status or {}})


OLD_HASH = spec_hash(index().spec)
NEW = index(model=NEW_MODEL)
CANDIDATE, NEW_HASH = collection_name(NEW.spec), spec_hash(NEW.spec)
SERVING = {"activeCollection": "handbook_old", "activeSpecHash": OLD_HASH, "activeSpec": OLD, "phase": "Ready"}
BUILDING = {**SERVING, "candidateCollection": CANDIDATE, "candidateSpecHash": NEW_HASH}


def job_of(ei: EmbeddingIndex, step: Step, *reports: StepReport, failed=False, running=False,
           collection=CANDIDATE, source="handbook_old") -> dict[str, StepJob]:
    name = step_job_name(ei, StepRequest(step, collection, source))
    return {name: StepJob(name, active=int(running), succeeded=not (failed or running), failed=failed,
                          reports=reports, permanent=failed)}


def report(step: Step, ok=True, reason="Done", **counts) -> StepReport:
    return StepReport(step, ok, reason, f"{step.value} {reason}", counts)


def conditions(plan) -> dict[str, tuple[bool | None, str]]:
    return {c.type: (c.status, c.reason) for c in plan.conditions}


def test_up_to_date_index_stays_ready_and_records_what_it_was_built_with():
    plan = decide(index({k: v for k, v in SERVING.items() if k != "activeSpec"}), {}, (), NOW)
    assert plan.fields["phase"] == "Ready" and plan.fields["activeSpec"]["chunking"]["maxTokens"] == 64
    assert conditions(plan)["ReembedPending"] == (False, "UpToDate") and plan.run is None


def test_without_a_ledger_a_change_is_only_reported():
    ei = EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "ns"},
                                   "spec": {**{k: v for k, v in BASE.items() if k != "ledger"}, "model": NEW_MODEL},
                                   "status": SERVING})
    plan = decide(ei, {}, (), NOW)
    assert conditions(plan)["ReembedPending"] == (True, "LedgerRequired") and plan.run is None
    assert conditions(plan)["Ready"][0] is True


@pytest.mark.parametrize("status, jobs, pipelines, phase, run, reason", [
    # a new essence names the candidate first (so pipelines can route to it), nothing runs yet
    (SERVING, "none", (), "Backfilling", None, "CandidateNamed"),
    # dual writes first: a pipeline that has not applied the candidate holds the backfill back
    ({**BUILDING, "phase": "Backfilling"}, "none", (PipelineRouting("feed", ("handbook_old",), True),),
     "Backfilling", None, "WaitingForDualWrites"),
    ({**BUILDING, "phase": "Backfilling"}, "none", (PipelineRouting("feed", ("handbook_old", CANDIDATE), False),),
     "Backfilling", None, "WaitingForDualWrites"),
    ({**BUILDING, "phase": "Backfilling"}, "none", (PipelineRouting("feed", ("handbook_old", CANDIDATE), True),),
     "Backfilling", Step.BACKFILL, "Backfilling"),
    ({**BUILDING, "phase": "Backfilling"}, "backfill-running", (), "Backfilling", Step.BACKFILL, "Backfilling"),
    ({**BUILDING, "phase": "Backfilling"}, "backfill-done", (), "CatchingUp", None, "Backfilled"),
    ({**BUILDING, "phase": "Backfilling"}, "backfill-rechunk", (), "Failed", None, "RechunkUnavailable"),
    ({**BUILDING, "phase": "CatchingUp"}, "none", (), None, Step.CATCHUP, "CatchingUp"),
    ({**BUILDING, "phase": "CatchingUp"}, "catchup-behind", (), None, None, "CatchingUp"),
    ({**BUILDING, "phase": "CatchingUp"}, "catchup-done", (), "Validating", None, "CaughtUp"),
    ({**BUILDING, "phase": "Validating"}, "none", (), None, Step.VALIDATE, "Validating"),
    ({**BUILDING, "phase": "Validating"}, "validate-failed", (), "Failed", None, "ValidationFailed"),
    ({**BUILDING, "phase": "Validating"}, "validate-passed", (), "Swapping", None, "Validated"),
    ({**BUILDING, "phase": "Swapping"}, "none", (), None, Step.SWAP, "Swapping"),
    ({**BUILDING, "phase": "Swapping"}, "swap-moved", (), "Failed", None, "AliasMoved"),
    ({**BUILDING, "phase": "Swapping"}, "swap-done", (), "Ready", None, "Swapped"),
    # a failure stays until the spec changes again (the candidate is kept for inspection)
    ({**BUILDING, "phase": "Failed", "conditions": [{"type": "Progressing", "status": "False",
                                                     "reason": "ValidationFailed", "message": "ratio"}]},
     "none", (), "Failed", None, "ValidationFailed"),
])
def test_reembedding_walks_its_phases(status, jobs, pipelines, phase, run, reason):
    gates_ok = (Gate(GateName.DOCUMENT_RATIO, True, "RatioMet", "1.0 >= 0.99", 1.0, 0.99),)
    gates_bad = (Gate(GateName.DOCUMENT_RATIO, False, "RatioTooLow", "0.5 < 0.99", 0.5, 0.99),)
    table = {
        "none": {},
        "backfill-running": job_of(NEW, Step.BACKFILL, running=True),
        "backfill-done": job_of(NEW, Step.BACKFILL, report(Step.BACKFILL, documents=60, written=58, unchanged=2),
                                report(Step.BACKFILL, documents=40, written=40)),
        "backfill-rechunk": job_of(NEW, Step.BACKFILL, report(Step.BACKFILL, False, "RechunkUnavailable"), failed=True),
        "catchup-behind": job_of(NEW, Step.CATCHUP, report(Step.CATCHUP, False, "Behind", remaining=3)),
        "catchup-done": job_of(NEW, Step.CATCHUP, report(Step.CATCHUP, True, "CaughtUp", remaining=0,
                                                         active_documents=100, candidate_documents=100)),
        "validate-failed": job_of(NEW, Step.VALIDATE, StepReport(Step.VALIDATE, False, "GateFailed", "ratio", {}, gates_bad)),
        "validate-passed": job_of(NEW, Step.VALIDATE, StepReport(Step.VALIDATE, True, "Validated", "all", {}, gates_ok)),
        "swap-moved": job_of(NEW, Step.SWAP, report(Step.SWAP, False, "AliasMoved"), failed=True),
        "swap-done": job_of(NEW, Step.SWAP, replace(report(Step.SWAP, True, "Swapped", swap_ms=12),
                                                    model="e5-small@0123456789ab")),
    }
    plan = decide(index(status, model=NEW_MODEL), table[jobs], pipelines, NOW)
    assert plan.fields.get("phase") == phase
    assert (plan.run.step if plan.run else None) == run
    assert conditions(plan)["Progressing"][1] == reason
    assert conditions(plan)["Ready"][0] is True  # the active collection serves throughout
    if jobs == "backfill-done":
        assert plan.fields["progress"] == {"documentsDone": 100, "documentsTotal": 100}
    if jobs == "catchup-behind":
        assert plan.delete and plan.fields["progress"]["backlog"] == 3  # run again
    if jobs == "validate-failed":
        assert conditions(plan)["DocumentRatio"] == (False, "RatioTooLow")
        assert conditions(plan)["Validated"] == (False, "GateFailed")
    if jobs == "swap-done":
        assert plan.fields["activeCollection"] == CANDIDATE and plan.fields["previousCollection"] == "handbook_old"
        assert plan.fields["previousSpecHash"] == OLD_HASH and plan.fields["activeSpecHash"] == NEW_HASH
        assert plan.fields["candidateCollection"] is None and plan.swap_ms == 12
        assert plan.fields["activeModel"] == "e5-small@0123456789ab"  # what the collection records
        assert plan.event[1] == "Swapped"


SWAPPED = {"activeCollection": CANDIDATE, "activeSpecHash": NEW_HASH, "activeSpec": {"model": NEW_MODEL, "chunking": OLD["chunking"]},
           "previousCollection": "handbook_old", "previousSpecHash": OLD_HASH, "previousSpec": OLD,
           "swappedAt": "2026-12-03T11:59:00Z", "phase": "Ready"}


def test_reverting_the_spec_swaps_straight_back_without_a_backfill():
    reverted = index(SWAPPED)  # the spec is back at the old model
    plan = decide(reverted, {}, (), NOW)
    assert plan.fields["phase"] == "RollingBack" and plan.run.step is Step.SWAP
    assert (plan.run.collection, plan.run.source) == ("handbook_old", CANDIDATE)
    done = job_of(reverted, Step.SWAP, report(Step.SWAP, True, "Swapped"), collection="handbook_old", source=CANDIDATE)
    back = decide(index({**SWAPPED, "phase": "RollingBack"}), done, (), NOW)
    assert back.fields["activeCollection"] == "handbook_old" and back.fields["previousCollection"] == CANDIDATE
    assert back.fields["activeModel"] == model_id(OLD["model"]["name"])  # a report without a model: from the spec
    assert back.fields["activeSpecHash"] == OLD_HASH and back.event[1] == "RolledBack"


@pytest.mark.parametrize("retention, status, pipelines, jobs, expect", [
    ({}, {}, (), "none", "PreviousKept"),  # kept until the next swap
    ({"retireAfterSeconds": 3600}, {}, (), "none", "PreviousKept"),
    ({"retireAfterSeconds": 30}, {}, (), "none", "retiring"),  # due: pipelines drop it first
    ({"keepPrevious": False}, {}, (), "none", "retiring"),
    ({"retireAfterSeconds": 30}, {"retiring": True}, (PipelineRouting("feed", (CANDIDATE, "handbook_old"), True),),
     "none", "wait"),
    ({"retireAfterSeconds": 30}, {"retiring": True}, (PipelineRouting("feed", (CANDIDATE,), True),), "none", "run"),
    ({"retireAfterSeconds": 30}, {"retiring": True}, (), "done", "retired"),
])
def test_the_previous_collection_is_kept_then_retired(retention, status, pipelines, jobs, expect):
    ei = index({**SWAPPED, **status}, model=NEW_MODEL, retention=retention)
    table = {"none": {}, "done": job_of(ei, Step.RETIRE, report(Step.RETIRE, True, "Retired"),
                                        collection="handbook_old", source=None)}
    plan = decide(ei, table[jobs], pipelines, NOW)
    progressing = conditions(plan)["Progressing"]
    if expect == "PreviousKept":
        assert progressing == (False, "PreviousKept") and not plan.fields.get("retiring")
    elif expect == "retiring":
        assert plan.fields["retiring"] is True and plan.run is None
    elif expect == "wait":
        assert plan.run is None and "feed" in next(c.message for c in plan.conditions if c.type == "Progressing")
    elif expect == "run":
        assert plan.run.step is Step.RETIRE and plan.run.collection == "handbook_old"
    else:
        assert plan.fields["previousCollection"] is None and progressing == (False, "Retired")


def test_retire_due_follows_retention():
    ei = index(SWAPPED, model=NEW_MODEL, retention={"retireAfterSeconds": 60})
    assert retire_due(ei, NOW) == datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert retire_due(index(SWAPPED, model=NEW_MODEL), NOW) is None
    assert retire_due(index(SERVING), NOW) is None
    assert retire_due(index(SWAPPED, retention={"keepPrevious": False}), NOW) == NOW - timedelta(minutes=1)


def test_step_jobs_are_named_by_what_they_act_on_and_carry_secrets_by_reference():
    ei = index(BUILDING, model=NEW_MODEL, milvus={"uri": "http://m:19530", "credentialsSecretRef": {"name": "creds"}},
               reembedding={"parallelism": 3})
    backfill = build_step_job(ei, StepRequest(Step.BACKFILL, CANDIDATE, "handbook_old"), OperatorDefaults())
    assert backfill["spec"]["completionMode"] == "Indexed" and backfill["spec"]["completions"] == 3
    env = {e["name"]: e for e in backfill["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_LEDGER_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "url", "optional": False}
    assert env["TRIBUTARY_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "creds"
    assert (env["TRIBUTARY_ACTIVE_COLLECTION"]["value"], env["TRIBUTARY_COLLECTION"]["value"]) == ("handbook_old", CANDIDATE)
    assert env["TRIBUTARY_MODEL"]["value"] == "/models/derived" and "TRIBUTARY_RECHUNK" not in env
    rechunk = build_step_job(index(BUILDING, chunking={"maxTokens": 32, "overlapTokens": 4}),
                             StepRequest(Step.CATCHUP, CANDIDATE, "handbook_old", rechunk=True), OperatorDefaults())
    env = {e["name"]: e.get("value") for e in rechunk["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_RECHUNK"] == "true" and env["TRIBUTARY_MAX_TOKENS"] == "32"
    swap = build_step_job(ei, StepRequest(Step.SWAP, CANDIDATE, "handbook_old"), OperatorDefaults())
    env = {e["name"]: e.get("value") for e in swap["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_EXPECT_COLLECTION"] == "handbook_old" and "TRIBUTARY_LEDGER_URL" not in env
    names = {step_job_name(ei, StepRequest(s, CANDIDATE, "handbook_old")) for s in Step}
    assert len(names) == len(Step) and all(len(n) <= 63 for n in names)
    assert step_job_name(ei, StepRequest(Step.SWAP, "handbook_old", CANDIDATE)) not in names  # a rollback's own


def test_backfill_reports_are_read_per_shard():
    message = report(Step.BACKFILL, documents=5, written=5).to_json()
    pods = [{"metadata": {"creationTimestamp": "a", "annotations": {"batch.kubernetes.io/job-completion-index": str(i)}},
             "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": message}}}]}}
            for i in range(2)]
    job = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    view = StepJob.from_job(job, pods)
    assert view.succeeded and view.counts() == {"documents": 10, "written": 10}
    broken = [{"metadata": {}, "status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": 1, "message": "Traceback\ncannot reach Milvus at http://m: refused"}}}]}}]
    failed = StepJob.from_job({"metadata": {"name": "j"}, "status": {}}, broken)
    assert failed.last_error == "cannot reach Milvus at http://m: refused" and not failed.permanent


def test_a_running_ingestion_holds_the_swap_and_the_catchup_runs_again():
    caught_up = job_of(NEW, Step.CATCHUP, report(Step.CATCHUP, True, "CaughtUp", remaining=0))
    held = decide(index({**BUILDING, "phase": "CatchingUp"}, model=NEW_MODEL), caught_up, (), NOW, ingesting=("nightly",))
    assert held.fields.get("phase") is None and held.delete == tuple(caught_up)
    assert conditions(held)["Progressing"][1] == "WaitingForIngestion"
    back = decide(index({**BUILDING, "phase": "Swapping"}, model=NEW_MODEL), {}, (), NOW, ingesting=("nightly",))
    assert back.fields["phase"] == "CatchingUp" and back.run is None
    assert "nightly" in next(c.message for c in back.conditions if c.type == "Progressing")
    done = decide(index({**BUILDING, "phase": "Swapping"}, model=NEW_MODEL), {}, (), NOW)
    assert done.run.step is Step.SWAP


def with_annotation(status, **spec) -> EmbeddingIndex:
    return EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "ns", "generation": 3,
                                                  "annotations": {"tributary.dev/rollback": "true"}},
                                     "spec": {**BASE, **spec}, "status": status})


def test_the_rollback_annotation_serves_the_previous_collection_until_it_is_removed():
    asked = with_annotation(SWAPPED, model=NEW_MODEL)  # the spec names the new model; kubectl asks for the old
    plan = decide(asked, {}, (), NOW)
    assert plan.fields["phase"] == "RollingBack" and plan.run.collection == "handbook_old"
    done = job_of(asked, Step.SWAP, report(Step.SWAP, True, "Swapped"), collection="handbook_old", source=CANDIDATE)
    back = decide(with_annotation({**SWAPPED, "phase": "RollingBack"}, model=NEW_MODEL), done, (), NOW)
    assert back.fields["activeCollection"] == "handbook_old"
    rolled = {**SWAPPED, **{k: v for k, v in back.fields.items() if v is not None}}
    rolled = {k: v for k, v in rolled.items() if back.fields.get(k, 0) is not None}
    held = decide(with_annotation(rolled, model=NEW_MODEL), {}, (), NOW)
    assert held.run is None and conditions(held)["ReembedPending"] == (True, "RollbackRequested")
    forward = decide(index(rolled, model=NEW_MODEL), {}, (), NOW)  # annotation removed: straight back
    assert forward.fields["phase"] == "RollingBack" and forward.run.collection == CANDIDATE


def test_drift_is_checked_once_per_interval_and_shown_in_status():
    spec = {"drift": {"intervalSeconds": 600}}
    first = decide(index(SERVING, **spec), {}, (), NOW)
    assert first.run.step is Step.DRIFT and first.run.collection == "handbook_old"
    name = step_job_name(index(SERVING, **spec), first.run)
    found = StepReport(Step.DRIFT, False, "OrphanRows", "handbook_old: 2 without a live ledger record",
                       {"documents": 40, "orphans": 2, "foreign": 0})
    read = decide(index(SERVING, **spec), {name: StepJob(name, succeeded=True, reports=(found,))}, (), NOW)
    assert read.fields["drift"] == {"checkedAt": "2026-12-03T12:00:00Z", "collection": "handbook_old",
                                    "documents": 40, "orphans": 2, "foreign": 0}
    assert conditions(read)["Drifted"] == (True, "OrphanRows") and read.delete == (name,)
    assert read.event[:2] == ("Warning", "OrphanRows")
    recent = {**SERVING, "drift": {"checkedAt": "2026-12-03T11:55:00Z", "collection": "handbook_old"}}
    assert decide(index(recent, **spec), {}, (), NOW).run is None  # 5 of 10 minutes
    stale = {**SERVING, "drift": {"checkedAt": "2026-12-03T11:45:00Z", "collection": "handbook_old"}}
    again = decide(index(stale, **spec), {}, (), NOW).run
    assert again.step is Step.DRIFT and step_job_name(index(stale, **spec), again) != "x"
    assert decide(index(SERVING), {}, (), NOW).run is None  # off without spec.drift
    moved = {**recent, "activeCollection": "handbook_new"}  # a swap: the new active is checked at once
    assert decide(index(moved, **spec), {}, (), NOW).run.collection == "handbook_new"


def test_drift_needs_the_shared_ledger():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="drift needs spec.ledger"):
        EmbeddingIndex.from_body({"metadata": {"name": "h", "namespace": "ns"}, "spec": {
            **{k: v for k, v in BASE.items() if k != "ledger"}, "drift": {"intervalSeconds": 600}}})
