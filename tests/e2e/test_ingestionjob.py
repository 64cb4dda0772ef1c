"""IngestionJob end to end: the real control plane (apiserver, Job controller, garbage collector,
scheduler), the operator, the process kubelet running the worker pods, a real milvus-lite server
and redis-server. Waits allow for the Job controller's 10 s back-off before a failed index is retried."""

from __future__ import annotations

import json
import re
import signal

import pytest
from tributary_workers.localservers import stop
import yaml
from harness.corpus import make_corpus, paragraph
from harness.waiting import wait_for
from tributary_operator.core.ingestion import checkpoint_configmap_name
from tributary_workers.pipeline.search import Searcher
from tributary_workers.pipeline.writer import open_client


def get_ij(kube, namespace, name="docs") -> dict:
    return json.loads(kube.kubectl("-n", namespace, "get", "ingestionjob", name, "-o", "json").stdout)


def jobs(kube, namespace) -> list[dict]:
    return json.loads(kube.kubectl("-n", namespace, "get", "jobs", "-o", "json").stdout)["items"]


def pods(kube, namespace) -> list[dict]:
    return json.loads(kube.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]


def apply(kube, namespace, manifest: dict) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def ingestion_job(corpus, milvus_uri, collection, **spec) -> dict:
    return {
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "IngestionJob",
        "metadata": {"name": "docs"},
        "spec": {
            "source": {"type": "local", "uri": str(corpus)},
            "target": {"inline": {"milvusUri": milvus_uri, "collection": collection,
                                  "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384},
                                  "chunking": {"maxTokens": 64, "overlapTokens": 8}}},
            "ledger": {"redisSecretRef": {"name": "state-redis"}},
            "parallelism": 2,
            **spec,
        },
    }


@pytest.fixture
def redis_secret(kube, namespace, redis_server):
    kube.kubectl("-n", namespace, "create", "secret", "generic", "state-redis", f"--from-literal=url={redis_server.url}")


def milvus_rows(uri, collection) -> list[dict]:
    client = open_client(uri)
    try:
        return client.query(collection, filter="", output_fields=["pk", "doc_id", "version"], limit=16384)
    finally:
        client.close()


def wait_phase(kube, namespace, phases, timeout=240) -> dict:
    return wait_for(lambda: (ij := get_ij(kube, namespace)).get("status", {}).get("phase") in phases and ij,
                    timeout=timeout, interval=0.5, message=f"IngestionJob phase in {phases}")


def test_ingestion_job_runs_sharded_and_reports(kube, namespace, operator, local_node, redis_secret, milvus_server,
                                                collection_name, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 16, paragraphs=3)
    apply(kube, namespace, ingestion_job(corpus, milvus_server.uri, collection_name))

    job = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0], timeout=30, message="worker Job")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("IngestionJob", "docs", True)
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_LEDGER_URL"]["valueFrom"]["secretKeyRef"]["name"] == "state-redis"
    assert "value" not in env["TRIBUTARY_LEDGER_URL"]  # the Redis URL never sits in the Job

    ij = wait_phase(kube, namespace, {"Succeeded", "PartiallySucceeded", "Failed"})
    status = ij["status"]
    rows = milvus_rows(milvus_server.uri, collection_name)
    assert status["phase"] == "Succeeded", status
    assert (status["documentsTotal"], status["documentsSucceeded"], status["documentsFailed"]) == (16, 16, 0)
    assert status["chunksWritten"] == len(rows) == len({r["pk"] for r in rows})
    assert {r["doc_id"] for r in rows} == {p.name for p in corpus.iterdir()}
    assert status["progress"] == "16/16"
    searcher = Searcher(milvus_server.uri, collection_name)
    searcher.warm_up()
    hits = searcher.run(paragraph(7, 1), 5)
    searcher.close()
    assert "doc-0007.txt" in [hit.doc_id for hit in hits]
    assert sorted(s["phase"] for s in status["shards"]) == ["Succeeded", "Succeeded"]
    assert sum(s["documentsDone"] for s in status["shards"]) == 16
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Complete"] == "True" and conditions["Progressing"] == "False"
    events = kube.kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=docs").stdout
    assert "RunStarted" in events and "Succeeded" in events
    printed = kube.kubectl("-n", namespace, "get", "ij").stdout
    assert "Succeeded" in printed and "16/16" in printed

    # Each shard's JSON report reached its pod's termination message (the errors work reads these).
    reports = [json.loads(p["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
               for p in pods(kube, namespace)]
    assert sorted(r["documents_total"] for r in reports) == sorted(s["documentsDone"] for s in status["shards"])

    # deleting the IngestionJob removes its Job, its pods (garbage collection) and the checkpoint ConfigMap
    kube.kubectl("-n", namespace, "delete", "ingestionjob", "docs", "--wait=true", "--timeout=60s")
    assert jobs(kube, namespace) == []
    assert "checkpoints" not in kube.kubectl("-n", namespace, "get", "configmaps").stdout
    wait_for(lambda: pods(kube, namespace) == [], timeout=60, message="the run's pods deleted")


def shard_checkpoint(kube, namespace, run, index) -> dict:
    out = kube.kubectl("-n", namespace, "get", "configmap", checkpoint_configmap_name(run), "-o", "json",
                       check=False)
    if out.returncode:
        return {}
    for key, raw in (json.loads(out.stdout).get("data") or {}).items():
        if key.endswith(f"shard-{index}-of-2"):
            return json.loads(raw)
    return {}


def test_a_killed_shard_resumes_from_its_checkpoint(kube, namespace, operator, local_node, redis_secret,
                                                    milvus_server, collection_name, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 40, paragraphs=24)  # ~20 chunks a document: a shard takes well over 10 s
    apply(kube, namespace, ingestion_job(corpus, milvus_server.uri, collection_name,
                                         maxConcurrency=1, embedBatchSize=4, backoffLimitPerIndex=2))
    run = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0]["metadata"]["name"], timeout=30,
                   message="worker Job")
    at_kill = wait_for(lambda: (c := shard_checkpoint(kube, namespace, run, 0)).get("sources_done", 0) >= 3 and c,
                       timeout=180, interval=0.2, message="shard 0 checkpointed some documents")
    local_node.kill(run, 0, signal.SIGKILL)
    assert not at_kill["completed"] and at_kill["sources_done"] < at_kill["sources_total"]

    ij = wait_phase(kube, namespace, {"Succeeded", "PartiallySucceeded", "Failed"}, timeout=300)
    status = ij["status"]
    rows = milvus_rows(milvus_server.uri, collection_name)
    *_, killed, resumed_attempt = local_node.attempts(run, 0)
    assert killed.exit_code == 128 + signal.SIGKILL, "the kill must land while shard 0 is running"
    assert resumed_attempt.exit_code == 0
    assert status["phase"] == "Succeeded", status
    assert (status["documentsTotal"], status["documentsSucceeded"], status["documentsUnchanged"]) == (40, 40, 0)
    assert status["chunksWritten"] == len(rows) == len({r["pk"] for r in rows}), "lost or duplicated chunks"
    assert {r["doc_id"] for r in rows} == {p.name for p in corpus.iterdir()}
    resumed = re.search(r"resuming run \S+: (\d+) of (\d+) sources already done", local_node.log(run, 0, attempt=-1))
    assert resumed and int(resumed.group(1)) >= at_kill["sources_done"], local_node.log(run, 0, attempt=-1)[-3000:]


def test_suspend_and_resume(kube, namespace, operator, local_node, redis_secret, milvus_server, collection_name,
                            tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 6, paragraphs=2)
    apply(kube, namespace, ingestion_job(corpus, milvus_server.uri, collection_name, suspend=True))
    ij = wait_phase(kube, namespace, {"Suspended"}, timeout=30)
    assert ij["status"]["conditions"]
    job = jobs(kube, namespace)[0]
    assert job["spec"]["suspend"] is True
    kube.kubectl("-n", namespace, "patch", "ingestionjob", "docs", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    ij = wait_phase(kube, namespace, {"Succeeded", "PartiallySucceeded", "Failed"}, timeout=240)
    assert ij["status"]["phase"] == "Succeeded" and ij["status"]["documentsSucceeded"] == 6
    assert len(jobs(kube, namespace)) == 1, "suspend/resume must not start another run"


def test_deleting_an_ingestion_job_cascades_by_garbage_collection_alone(kube, namespace, operator, local_node,
                                                                        redis_secret, milvus_server,
                                                                        collection_name, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 40, paragraphs=24)  # long enough to still run when it is deleted
    apply(kube, namespace, ingestion_job(corpus, milvus_server.uri, collection_name, maxConcurrency=1))
    run = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0]["metadata"]["name"], timeout=30,
                   message="worker Job")
    local_node.wait_running(run, 0, timeout=60)
    # The operator's delete handler is out of the game: the operator is stopped and its finalizer
    # removed, so only owner references and the garbage collector remove the children.
    stop(operator.proc)
    kube.kubectl("-n", namespace, "delete", "ingestionjob", "docs", "--wait=false")
    kube.kubectl("-n", namespace, "patch", "ingestionjob", "docs", "--type=merge", "-p",
                 '{"metadata":{"finalizers":null}}')
    wait_for(lambda: jobs(kube, namespace) == [] and pods(kube, namespace) == [], timeout=90, interval=0.5,
             message="Job and pods garbage-collected")
    assert "checkpoints" not in kube.kubectl("-n", namespace, "get", "configmaps").stdout
    assert not any(a.running for index in (0, 1) for a in local_node.attempts(run, index))


def test_a_run_whose_job_expired_by_ttl_is_not_started_again(kube, namespace, operator, local_node, redis_secret,
                                                             milvus_server, collection_name, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 4, paragraphs=1)
    apply(kube, namespace, ingestion_job(corpus, milvus_server.uri, collection_name, ttlSecondsAfterFinished=0))
    run = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0]["metadata"]["name"], timeout=30,
                   message="worker Job")
    wait_for(lambda: jobs(kube, namespace) == [], timeout=180, interval=0.5, message="the TTL controller deleted it")
    ij = wait_phase(kube, namespace, {"Succeeded", "PartiallySucceeded", "Failed"}, timeout=60)
    assert ij["status"]["jobName"] == run
    failed = [c for c in ij["status"]["conditions"] if c["type"] == "Failed" and c["status"] == "True"]
    # Recorded in time (the interim SuccessCriteriaMet counts), or honestly reported as lost.
    assert ij["status"]["phase"] == "Succeeded" or failed[0]["reason"] == "RunLost", ij["status"]

    def resyncs() -> int:
        return operator.logs().count("Timer 'resync' succeeded")

    seen = resyncs()
    wait_for(lambda: resyncs() >= seen + 2, timeout=30, message="two more resyncs of the IngestionJob")
    assert jobs(kube, namespace) == []
    assert operator.logs().count("started run") == 1, "the expired run must not be started again"


def test_a_scheduled_run_with_prune_removes_a_deleted_document_on_its_next_tick(
        kube, namespace, operator, local_node, redis_secret, milvus_server, collection_name, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 4, paragraphs=2)
    apply(kube, namespace, ingestion_job(corpus, milvus_server.uri, collection_name, parallelism=1,
                                         schedule="* * * * *", prune={"enabled": True}))
    first = wait_for(lambda: (s := get_ij(kube, namespace).get("status", {})).get("phase") == "Succeeded" and s,
                     timeout=150, interval=1, message="the first scheduled run succeeded")
    assert first["documentsSucceeded"] == 4 and first["documentsPruned"] == 0
    (corpus / "doc-0002.txt").unlink()

    def next_run_done():
        status = get_ij(kube, namespace).get("status", {})
        return status.get("jobName") != first["jobName"] and status.get("phase") == "Succeeded" and status

    second = wait_for(next_run_done, timeout=150, interval=1, message="the next tick's run succeeded")
    assert (second["documentsPruned"], second["documentsUnchanged"]) == (1, 3)
    assert "1 pruned" in next(c["message"] for c in second["conditions"] if c["type"] == "Ready")
    assert {r["doc_id"] for r in milvus_rows(milvus_server.uri, collection_name)} == {
        "doc-0000.txt", "doc-0001.txt", "doc-0003.txt"}
