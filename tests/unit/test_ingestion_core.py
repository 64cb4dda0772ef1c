"""IngestionJob's pure core: names, the Job manifest, the schedule, and status aggregation."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from tributary_operator.api.v1alpha1 import IngestionJob
from tributary_operator.core.ingestion import (
    OperatorDefaults,
    RunView,
    ShardProgress,
    build_job,
    compute_status,
    decide_run,
    inline_target,
    latest_tick,
    one_off_run_name,
    parse_indexes,
    run_key,
    runs_to_delete,
    shard_progress,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_ij(**spec_overrides):
    spec = {
        "source": {"type": "local", "uri": "/data/docs", "include": ["**/*.md"]},
        "target": {"inline": {"milvusUri": "http://milvus:19530", "collection": "docs",
                              "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384},
                              "credentialsSecretRef": {"name": "milvus-creds"}}},
        "parallelism": 2,
        "ledger": {"redisSecretRef": {"name": "redis", "key": "url"}},
    }
    spec.update(spec_overrides)
    return IngestionJob.from_body({
        "apiVersion": "tributary.dev/v1alpha1", "kind": "IngestionJob",
        "metadata": {"name": "nightly-docs", "namespace": "rag", "generation": 3,
                     "creationTimestamp": "2026-11-24T00:00:00Z"},
        "spec": spec,
    })


def env_of(job):
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_indexed_job_manifest():
    ij = make_ij(backoffLimitPerIndex=2, activeDeadlineSeconds=600, ttlSecondsAfterFinished=60)
    job = build_job(ij, "nightly-docs-abc", inline_target(ij.spec), OperatorDefaults())
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (
        "Indexed", 2, 2, 2)
    assert spec["activeDeadlineSeconds"] == 600 and spec["ttlSecondsAfterFinished"] == 60
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    env = env_of(job)
    assert env["TRIBUTARY_SOURCE"]["value"] == "/data/docs"
    assert env["TRIBUTARY_INCLUDE"]["value"] == "**/*.md"
    assert env["TRIBUTARY_SHARD_COUNT"]["value"] == "2"
    assert env["TRIBUTARY_CHECKPOINT_URL"]["value"] == "configmap://rag/nightly-docs-abc-checkpoints"
    assert env["TRIBUTARY_PARTIAL_EXIT_CODE"]["value"] == "0"
    # credentials only through Secret references, never values in the manifest
    assert env["TRIBUTARY_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "milvus-creds", "key": "MILVUS_TOKEN", "optional": False}
    assert env["TRIBUTARY_LEDGER_URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis"
    assert "TRIBUTARY_MODEL" not in env  # the bundled default model
    assert "TRIBUTARY_BULK_LOAD" not in env
    assert job["metadata"]["labels"]["tributary.dev/ingestionjob"] == "nightly-docs"


def test_initial_load_uses_the_bulk_path_and_s3_credentials_come_from_the_secret():
    ij = make_ij(mode="initialLoad", source={"type": "s3", "uri": "s3://bucket/docs",
                                             "credentialsSecretRef": {"name": "s3-creds"}})
    job = build_job(ij, "r", inline_target(ij.spec), OperatorDefaults())
    assert env_of(job)["TRIBUTARY_BULK_LOAD"]["value"] == "true"
    assert job["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_run_key_ignores_pause_and_tidy_fields_but_not_the_source():
    base = make_ij()
    assert run_key(base.spec) == run_key(make_ij(suspend=True, ttlSecondsAfterFinished=5).spec)
    assert run_key(base.spec) != run_key(make_ij(parallelism=3).spec)
    name = one_off_run_name("x" * 100, base.spec)
    assert len(name) <= 52


def test_one_off_run_is_started_once():
    ij = make_ij()
    decision = decide_run(ij, [], NOW)
    assert decision.start == one_off_run_name("nightly-docs", ij.spec)
    existing = RunView(name=decision.start, created="t")
    assert decide_run(ij, [existing], NOW).start is None


def test_changed_spec_replaces_the_active_run():
    old = RunView(name="nightly-docs-old", created="t1", active=2)
    decision = decide_run(make_ij(parallelism=4), [old], NOW)
    assert decision.start and decision.stop == ("nightly-docs-old",)


def test_finished_run_whose_job_was_cleaned_up_is_not_rerun():
    ij = make_ij()
    ij.status.job_name = one_off_run_name("nightly-docs", ij.spec)
    ij.status.phase = "Succeeded"
    assert decide_run(ij, [], NOW).start is None


def test_schedule_starts_at_ticks_and_forbid_skips_overlaps():
    ij = make_ij(schedule="0 * * * *")
    decision = decide_run(ij, [], NOW)
    assert decision.tick == NOW and decision.start.endswith(str(int(NOW.timestamp() // 60)))
    busy = RunView(name="nightly-docs-1", created="t", active=1)
    assert decide_run(ij, [busy], NOW).start is None
    ij.status.last_schedule_time = NOW
    assert decide_run(ij, [], NOW + timedelta(minutes=30)).start is None
    assert decide_run(make_ij(schedule="0 * * * *", suspend=True), [], NOW).start is None


def test_latest_tick():
    since = NOW - timedelta(hours=3, minutes=10)
    assert latest_tick("0 * * * *", since, NOW) == NOW
    assert latest_tick("0 0 1 1 *", since, NOW) is None


def test_history_limits_delete_oldest_finished_runs():
    ij = make_ij(successfulRunsHistoryLimit=1, failedRunsHistoryLimit=0)
    runs = [RunView(name=f"ok-{i}", created=f"t{i}", finished=True, succeeded=True) for i in range(3)]
    runs += [RunView(name="bad", created="t9", finished=True, succeeded=False),
             RunView(name="live", created="t10", active=1)]
    assert runs_to_delete(ij.spec, runs) == ["ok-0", "ok-1", "bad"]


def test_interval_notation():
    assert parse_indexes("0,2-4,7") == [0, 2, 3, 4, 7]
    assert parse_indexes(None) == [] and parse_indexes("") == []


def checkpoint(total, done, succeeded, failed, chunks, completed=False, failures=()):
    return json.dumps({"sources_total": total, "sources_done": done, "completed": completed, "report": {
        "documents_total": succeeded + failed, "documents_succeeded": succeeded, "documents_failed": failed,
        "documents_unchanged": 0, "chunks_written": chunks,
        "failures": [{"doc_id": d, "reason": r} for d, r in failures]}})


def test_status_aggregates_shards():
    ij = make_ij()
    data = {
        "r.docs.shard-0-of-2": checkpoint(10, 10, 9, 1, 40, True, [("bad.pdf", "unreadable PDF: x" * 200)]),
        "r.docs.shard-1-of-2": checkpoint(12, 5, 5, 0, 20),
        "other.docs.shard-0-of-2": checkpoint(99, 99, 99, 0, 99),
    }
    shards = shard_progress(data, "r")
    assert set(shards) == {0, 1}
    run = RunView(name="r", created="t", active=1, start_time="2026-11-24T12:00:00Z",
                  completed_indexes=frozenset({0}))
    fields, conditions = compute_status(ij, run, shards)
    assert fields["phase"] == "Running" and fields["progress"] == "15/22"
    assert (fields["documentsSucceeded"], fields["documentsFailed"], fields["chunksWritten"]) == (14, 1, 60)
    assert [s["phase"] for s in fields["shards"]] == ["Succeeded", "Running"]
    assert fields["failures"][0]["docId"] == "bad.pdf" and len(fields["failures"][0]["reason"]) == 1024
    assert fields["activeRun"] == "r" and fields["completionTime"] is None
    assert {c.type: c.status for c in conditions} == {
        "Ready": False, "Progressing": True, "Complete": False, "Failed": False, "Suspended": False}
    ready = next(c for c in conditions if c.type == "Ready")
    assert (ready.reason, ready.message) == ("Running", "run r: 1/2 shards done, 15 documents, 1 failed")


@pytest.mark.parametrize("run, failed_docs, phase, ready", [
    (RunView(name="r", created="t", finished=True, succeeded=True), 0, "Succeeded", (True, "Succeeded")),
    (RunView(name="r", created="t", finished=True, succeeded=True), 2, "PartiallySucceeded",
     (True, "PartiallySucceeded")),
    (RunView(name="r", created="t", finished=True, failed_reason="FailedIndexes"), 0, "Failed", (False, "RunFailed")),
    (RunView(name="r", created="t", suspended=True), 0, "Suspended", (False, "Suspended")),
    (RunView(name="r", created="t"), 0, "Pending", (False, "Pending")),
])
def test_phases(run, failed_docs, phase, ready):
    shards = {0: ShardProgress(0, report={"documents_failed": failed_docs})}
    fields, conditions = compute_status(make_ij(parallelism=1), run, shards)
    assert fields["phase"] == phase
    assert [(c.status, c.reason) for c in conditions if c.type == "Ready"] == [ready]
    if phase == "Failed":
        assert [c.reason for c in conditions if c.type == "Failed"] == ["FailedIndexes"]


def test_job_status_is_read_like_the_job_controller_writes_it():
    job = {"metadata": {"name": "r", "creationTimestamp": "t"}, "spec": {"suspend": True}, "status": {
        "active": 0, "completedIndexes": "0-1", "startTime": "s", "completionTime": "c",
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}}
    view = RunView.from_job(job)
    assert view.finished and view.succeeded and view.completed_indexes == {0, 1}
    assert view.suspend_requested and not view.suspended


def test_worker_pods_stop_quickly_report_through_the_termination_log_and_fail_an_index_on_usage_errors():
    from tributary_workers.contract.exits import EXIT_PERMANENT
    from tributary_workers.contract import env as ENV

    job = build_job(make_ij(), "r", inline_target(make_ij().spec), OperatorDefaults())
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == OperatorDefaults().termination_grace_seconds < 30
    assert env_of(job)[ENV.REPORT_FILE]["value"] == container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    fail_index, ignore = job["spec"]["podFailurePolicy"]["rules"]
    assert fail_index["action"] == "FailIndex" and fail_index["onExitCodes"]["values"] == [EXIT_PERMANENT]
    assert fail_index["onExitCodes"]["containerName"] == container["name"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}  # restricted Pod Security


@pytest.mark.parametrize(("conditions", "finished", "succeeded", "reason"), [
    ([], False, False, ""),
    (["SuccessCriteriaMet"], True, True, ""),  # pods still terminating: the run is finishing
    (["SuccessCriteriaMet", "Complete"], True, True, ""),
    (["FailureTarget"], True, False, "BackoffLimitExceeded"),
    (["FailureTarget", "Failed"], True, False, "BackoffLimitExceeded"),
])
def test_interim_job_conditions_count_as_finishing(conditions, finished, succeeded, reason):
    job = {"metadata": {"name": "r"}, "status": {"conditions": [
        {"type": kind, "status": "True", "reason": "BackoffLimitExceeded" if "Fail" in kind else "CompletionsReached",
         "lastTransitionTime": "2026-11-24T12:00:00Z"} for kind in conditions]}}
    view = RunView.from_job(job)
    assert (view.finished, view.succeeded, view.failed_reason) == (finished, succeeded, reason)
    if succeeded:
        assert view.completion_time == "2026-11-24T12:00:00Z"  # before Complete brings completionTime


def test_failed_pods_termination_messages_reach_the_failed_condition():
    def pod(index, phase, message, created):
        return {"metadata": {"creationTimestamp": created,
                             "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
                "status": {"phase": phase, "containerStatuses": [{"state": {"terminated": {"message": message}}}]}}

    job = {"metadata": {"name": "r"}, "status": {"failedIndexes": "1", "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "FailedIndexes"}]}}
    pods = [pod(0, "Succeeded", '{"documents_total": 3}', "t1"),
            pod(1, "Failed", "INFO starting\ntributary-batch-worker: error: cannot reach Milvus", "t2"),
            pod(1, "Failed", "", "t3")]
    view = RunView.from_job(job, pods)
    assert view.failure_messages == ((1, "tributary-batch-worker: error: cannot reach Milvus"),)
    fields, conditions = compute_status(make_ij(parallelism=2), view, {})
    by_type = {c.type: c for c in conditions}
    assert by_type["Failed"].status and by_type["Failed"].reason == "FailedIndexes"
    expected = ("run r: 0/2 shards done, 0 documents, 0 failed; the run failed (FailedIndexes): "
                "shard 1: tributary-batch-worker: error: cannot reach Milvus")
    assert by_type["Failed"].message == by_type["Ready"].message == expected
    assert (by_type["Ready"].status, by_type["Ready"].reason) == (False, "RunFailed")
    assert [row.get("message") for row in fields["shards"]] == [
        None, "tributary-batch-worker: error: cannot reach Milvus"]


def test_a_one_off_run_whose_job_vanished_before_its_outcome_was_seen_is_not_started_again():
    ij = make_ij(ttlSecondsAfterFinished=0)
    ij.status.job_name = one_off_run_name("nightly-docs", ij.spec)
    ij.status.phase = "Running"  # the TTL controller deleted the Job between two resyncs
    assert decide_run(ij, [], NOW).start is None
    fields, conditions = compute_status(ij, None, {})
    assert fields["phase"] == "Failed"
    (failed,) = [c for c in conditions if c.type == "Failed"]
    assert failed.reason == "RunLost" and "not started again" in failed.message
    changed = make_ij(ttlSecondsAfterFinished=0, parallelism=3)  # a new spec is a new run
    changed.status.job_name, changed.status.phase = ij.status.job_name, "Running"
    assert decide_run(changed, [], NOW).start == one_off_run_name("nightly-docs", changed.spec)


def test_prune_reaches_the_worker_as_env_naming_the_job_as_its_source():
    ij = make_ij(prune={"enabled": True, "maxFraction": 0.2})
    env = env_of(build_job(ij, "r", inline_target(ij.spec), OperatorDefaults()))
    assert env["TRIBUTARY_PRUNE"]["value"] == "true" and env["TRIBUTARY_PRUNE_MAX_FRACTION"]["value"] == "0.2"
    assert env["TRIBUTARY_SOURCE_ID"]["value"] == "ingestionjob/rag/nightly-docs"
    assert "TRIBUTARY_PRUNE" not in env_of(build_job(make_ij(), "r", inline_target(make_ij().spec), OperatorDefaults()))


def test_prune_needs_a_shared_ledger():
    with pytest.raises(ValueError, match="prune.enabled needs spec.ledger"):
        make_ij(prune={"enabled": True}, ledger=None)


def test_a_refused_prune_ends_partially_succeeded_and_says_why():
    refused = "prune refused: 8 of 10 documents (80%) are gone from the source, over the 50% limit"
    shards = {0: ShardProgress(0, report={"documents_total": 2, "prune_refused": 8, "prune_message": refused}),
              1: ShardProgress(1, report={"documents_total": 3, "documents_pruned": 2})}
    run = RunView(name="r", created="t", finished=True, succeeded=True)
    fields, conditions = compute_status(make_ij(prune={"enabled": True}), run, shards)
    assert fields["phase"] == "PartiallySucceeded" and fields["documentsPruned"] == 2
    ready = next(c for c in conditions if c.type == "Ready")
    assert ready.status is True and ready.reason == "PartiallySucceeded"
    assert ready.message.endswith(f"5 documents, 0 failed, 2 pruned; shard 0: {refused}")


def test_an_index_ref_run_without_its_own_ledger_uses_the_index_s_shared_ledger():
    from tributary_operator.api.v1alpha1 import EmbeddingIndex
    from tributary_operator.core.ingestion.checks import secret_needs
    from tributary_operator.core.targets import index_target

    index = EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "rag"}, "spec": {
        "milvus": {"uri": "http://milvus:19530"}, "alias": "handbook",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "ledger": {"redisSecretRef": {"name": "shared-redis", "key": "uri"}}},
        "status": {"activeCollection": "handbook_1234abcd"}})
    ij = make_ij(target={"indexRef": {"name": "handbook"}}, ledger=None)
    env = env_of(build_job(ij, "nightly-docs-abc", index_target(index), OperatorDefaults()))
    assert env["TRIBUTARY_LEDGER_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "shared-redis", "key": "uri", "optional": False}
    assert ("shared-redis", frozenset({"uri"})) in {(n.name, n.keys) for n in secret_needs(ij, index)}
    own = env_of(build_job(make_ij(target={"indexRef": {"name": "handbook"}}), "r", index_target(index),
                           OperatorDefaults()))
    assert own["TRIBUTARY_LEDGER_URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis"  # its own wins


def test_only_inline_targets_may_create_their_collection():
    from tributary_operator.api.v1alpha1 import EmbeddingIndex
    from tributary_operator.core.targets import index_target

    index = EmbeddingIndex.from_body({"metadata": {"name": "handbook", "namespace": "rag"}, "spec": {
        "milvus": {"uri": "http://milvus:19530"}, "alias": "handbook",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"}}, "status": {"activeCollection": "handbook_1"}})
    ij = make_ij(target={"indexRef": {"name": "handbook"}})
    assert env_of(build_job(ij, "r", index_target(index), OperatorDefaults()))["TRIBUTARY_CREATE_COLLECTION"][
        "value"] == "false"
    assert "TRIBUTARY_CREATE_COLLECTION" not in env_of(build_job(make_ij(), "r", inline_target(make_ij().spec),
                                                                 OperatorDefaults()))
