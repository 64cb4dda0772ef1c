"""What admission lets through lands on the IngestionJob itself: Ready=False with a reason and a
message that names the missing thing, one Warning Event per cause (not one per retry), and recovery
without an operator restart once the cause is fixed. Deletes never hang. Real kube-apiserver and
the operator; no pod has to run for any of this."""

from __future__ import annotations

import json

import yaml
from harness.operator import create_worker_account, launch
from harness.waiting import wait_for
from tributary_workers.localservers import stop

MODEL = {"name": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384}


def ingestion_job(name="docs", **spec) -> dict:
    return {
        "apiVersion": "tributary.dev/v1alpha1", "kind": "IngestionJob", "metadata": {"name": name},
        "spec": {
            "source": {"type": "local", "uri": "/data/docs"},
            "target": {"inline": {"milvusUri": "http://127.0.0.1:19530", "collection": "docs", "model": MODEL}},
            **spec,
        },
    }


def apply(kube, namespace, manifest: dict) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def get_json(kube, namespace, *what) -> dict:
    return json.loads(kube.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def ready(kube, namespace, name="docs") -> dict:
    conditions = get_json(kube, namespace, "ingestionjob", name).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Ready"), {})


def wait_ready_reason(kube, namespace, reasons, name="docs", timeout=60) -> dict:
    return wait_for(lambda: (c := ready(kube, namespace, name)).get("reason") in reasons and c,
                    timeout=timeout, interval=0.3, message=f"Ready reason in {reasons}")


def events(kube, namespace, name="docs", reason=None) -> list[dict]:
    items = get_json(kube, namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e for e in items if reason is None or e["reason"] == reason]


def jobs(kube, namespace) -> list[dict]:
    return get_json(kube, namespace, "jobs")["items"]


def resyncs(operator) -> int:
    return operator.logs().count("Timer 'resync' succeeded")


def after_resyncs(operator, count: int, timeout: float = 30) -> None:
    """Wait until the operator has re-checked the object `count` more times (its log says so)."""
    start = resyncs(operator)
    wait_for(lambda: resyncs(operator) >= start + count, timeout=timeout, message=f"{count} resyncs")


def test_a_missing_secret_is_named_and_the_run_starts_once_it_exists(kube, namespace, operator, redis_server):
    apply(kube, namespace, ingestion_job(ledger={"redisSecretRef": {"name": "state-redis"}}))
    condition = wait_ready_reason(kube, namespace, {"SecretNotFound"})
    assert condition["status"] == "False"
    assert condition["message"] == "Secret state-redis (ledger.redisSecretRef) not found in this namespace"
    after_resyncs(operator, 3)
    warnings = events(kube, namespace, reason="SecretNotFound")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and warnings[0].get("count", 1) == 1
    assert jobs(kube, namespace) == []
    assert redis_server.url not in json.dumps(get_json(kube, namespace, "ingestionjob", "docs"))

    kube.kubectl("-n", namespace, "create", "secret", "generic", "state-redis", "--from-literal=URL=x")
    condition = wait_ready_reason(kube, namespace, {"SecretKeyMissing"})
    assert condition["message"] == "Secret state-redis (ledger.redisSecretRef) has no key url"

    kube.kubectl("-n", namespace, "delete", "secret", "state-redis")
    kube.kubectl("-n", namespace, "create", "secret", "generic", "state-redis",
                 f"--from-literal=url={redis_server.url}")
    wait_for(lambda: jobs(kube, namespace), timeout=30, message="the run's Job, once the Secret exists")
    assert wait_ready_reason(kube, namespace, {"Pending", "Running"})["status"] == "False"
    wait_for(lambda: events(kube, namespace, reason="Recovered"), timeout=30, message="a Recovered Event")
    # No duplicate Events on create: one RunStarted.
    assert len(events(kube, namespace, reason="RunStarted")) == 1


def test_a_missing_service_account_is_named(kube, namespace, operator):
    apply(kube, namespace, ingestion_job(worker={"serviceAccountName": "ingester"}))
    condition = wait_ready_reason(kube, namespace, {"ServiceAccountNotFound"})
    assert condition["message"] == ("ServiceAccount ingester (spec.worker.serviceAccountName) not found in this "
                                    "namespace")
    kube.kubectl("-n", namespace, "create", "serviceaccount", "ingester")
    job = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0], timeout=30, message="the run's Job")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "ingester"


def test_a_missing_embedding_index_is_named_and_followed(kube, namespace, operator, milvus_server, request):
    apply(kube, namespace, ingestion_job(target={"indexRef": {"name": "handbook"}}))
    assert "EmbeddingIndex handbook (spec.target.indexRef) not found" in wait_ready_reason(
        kube, namespace, {"IndexNotFound"})["message"]
    apply(kube, namespace, {"apiVersion": "tributary.dev/v1alpha1", "kind": "EmbeddingIndex",
                            "metadata": {"name": "handbook"},
                            "spec": {"milvus": {"uri": milvus_server.uri}, "alias": f"handbook_{namespace[-6:]}",
                                     "model": MODEL}})
    wait_ready_reason(kube, namespace, {"IndexNotReady"})  # no node yet: the provisioning Job waits
    request.getfixturevalue("local_node")
    index = wait_for(lambda: (ei := json.loads(kube.kubectl("-n", namespace, "get", "ei", "handbook", "-o",
                                                            "json").stdout)).get("status", {}).get(
        "activeCollection") and ei, timeout=120, message="the index provisioned")
    runs = lambda: [j for j in jobs(kube, namespace) if "tributary.dev/ingestionjob" in j["metadata"]["labels"]]
    job = wait_for(lambda: runs() and runs()[0], timeout=30, message="the run's Job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRIBUTARY_COLLECTION"] == index["status"]["activeCollection"]


def test_a_job_the_api_server_refuses_is_child_rejected_once(kube, namespace, operator):
    # The schema takes any resource name; the API server's Pod validation refuses this one.
    apply(kube, namespace, ingestion_job(worker={"resources": {"requests": {"cpu!": "1"}}}))
    condition = wait_ready_reason(kube, namespace, {"ChildRejected"})
    assert condition["message"].startswith("the API server refused Job docs-") and "cpu!" in condition["message"]
    after_resyncs(operator, 3)
    assert len(events(kube, namespace, reason="ChildRejected")) == 1
    assert jobs(kube, namespace) == []
    # A fixed spec (a new generation) is tried again and runs.
    apply(kube, namespace, ingestion_job(worker={"resources": {"requests": {"cpu": 1, "memory": "256Mi"}}}))
    job = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0], timeout=30, message="the run's Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "256Mi"}}


def test_the_longest_name_admission_allows_runs_and_deletes(kube, namespace, operator):
    name = "n" * 63
    apply(kube, namespace, ingestion_job(name=name))
    job = wait_for(lambda: jobs(kube, namespace) and jobs(kube, namespace)[0], timeout=30, message="the run's Job")
    assert job["metadata"]["labels"]["tributary.dev/ingestionjob"] == name
    kube.kubectl("-n", namespace, "delete", "ingestionjob", name, "--timeout=60s")
    assert get_json(kube, namespace, "ingestionjobs")["items"] == []
    wait_for(lambda: not [j for j in jobs(kube, namespace) if not j["metadata"].get("deletionTimestamp")],
             timeout=30, message="the runs deleted with the IngestionJob")


RESTRICTED_ROLE = {
    # Enough for kopf and the status, but not for Jobs: every reconcile and the cleanup fail.
    "rules": [
        {"apiGroups": ["tributary.dev"], "resources": ["ingestionjobs", "streampipelines", "embeddingindexes"],
         "verbs": ["get", "list", "watch", "patch", "update"]},
        {"apiGroups": ["tributary.dev"], "resources": ["ingestionjobs/status"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    ],
}


def restricted_operator(kube, namespace, tmp_path):
    """The operator as a ServiceAccount that may not touch Jobs (a broken install, say)."""
    cluster_rules = [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                      "verbs": ["list", "watch"]},
                     {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]
    account = f"op-{namespace}"[:63]
    manifests = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator", "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "operator", "namespace": namespace}, **RESTRICTED_ROLE},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "operator", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
         "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": account},
         "rules": cluster_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": account},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]},
    ]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    token = kube.kubectl("create", "token", "operator", "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    kubeconfig = tmp_path / "restricted.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    return launch(kubeconfig, namespace, tmp_path / "operator.log"), account


def test_errors_of_the_reconcile_and_of_the_cleanup_land_on_the_object(kube, namespace, tmp_path):
    running, account = restricted_operator(kube, namespace, tmp_path)
    try:
        apply(kube, namespace, ingestion_job())
        condition = wait_ready_reason(kube, namespace, {"ReconcileError"})
        assert condition["message"].startswith("Kubernetes API 403 Forbidden:") and "jobs.batch" in condition["message"]
        assert "\n" not in condition["message"] and "HTTP response headers" not in condition["message"]
        after_resyncs(running, 2)
        assert len(events(kube, namespace, reason="ReconcileError")) == 1
        # The cleanup fails too: after its bounded retries the finalizer goes and the delete completes.
        kube.kubectl("-n", namespace, "delete", "ingestionjob", "docs", "--wait=false")
        wait_for(lambda: get_json(kube, namespace, "ingestionjobs")["items"] == [], timeout=60,
                 message="the IngestionJob gone despite the failing cleanup")
        cleanup = events(kube, namespace, reason="CleanupFailed")
        assert cleanup and cleanup[0]["type"] == "Warning" and "garbage collector" in cleanup[0]["message"]
    finally:
        stop(running.proc)
        kube.kubectl("delete", "clusterrole,clusterrolebinding", account, "--ignore-not-found")


def test_a_worker_that_cannot_run_says_why_on_the_object(kube, namespace, operator, local_node, milvus_server,
                                                          collection_name, tmp_path):
    """model.dimension 768 for a 384-dimension model: the shard exits EXIT_PERMANENT, the Job fails the
    index without retrying it (podFailurePolicy), and the worker's one-line reason is on the object."""
    from tributary_workers.contract.exits import EXIT_PERMANENT

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a document that is never embedded")
    apply(kube, namespace, ingestion_job(
        source={"type": "local", "uri": str(corpus)}, backoffLimitPerIndex=3,
        target={"inline": {"milvusUri": milvus_server.uri, "collection": collection_name,
                           "model": {**MODEL, "dimension": 768}}}))
    condition = wait_ready_reason(kube, namespace, {"RunFailed"}, timeout=180)
    expected = "model sentence-transformers/all-MiniLM-L6-v2 produces 384-dimension vectors, not 768"
    assert expected in condition["message"]
    status = get_json(kube, namespace, "ingestionjob", "docs")["status"]
    assert status["phase"] == "Failed" and expected in status["shards"][0]["message"]
    pods = get_json(kube, namespace, "pods")["items"]
    assert len(pods) == 1, "a retry cannot help: the index failed after one attempt"
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == EXIT_PERMANENT
    warning = events(kube, namespace, reason="RunFailed")
    assert len(warning) == 1 and warning[0]["type"] == "Warning" and expected in warning[0]["message"]


def test_a_second_operator_stands_by_and_takes_over_when_the_first_dies(kube, namespace, tmp_path):
    create_worker_account(kube, namespace)
    first = launch(kube.kubeconfig, namespace, tmp_path / "first.log")
    second = None
    try:
        wait_for(lambda: "leading as" in first.logs(), timeout=30, message="the first operator leads")
        second = launch(kube.kubeconfig, namespace, tmp_path / "second.log")
        wait_for(lambda: "standing by: another operator is active for this scope" in second.logs(), timeout=30,
                 message="the second operator stands by")
        apply(kube, namespace, ingestion_job())
        wait_for(lambda: jobs(kube, namespace), timeout=30, message="the first operator's run")
        assert "Handler 'reconcile' succeeded" not in second.logs()  # it never acted on the object
        first.proc.kill()  # no chance to release: the Lease must expire
        wait_for(lambda: "took over Lease" in second.logs(), timeout=45, message="the standby takes over")
        kube.kubectl("-n", namespace, "patch", "ingestionjob", "docs", "--type=merge", "-p",
                     json.dumps({"spec": {"suspend": True}}))
        wait_for(lambda: jobs(kube, namespace)[0]["spec"].get("suspend") is True, timeout=30,
                 message="the new leader reconciles")
    finally:
        stop(first.proc)
        if second is not None:
            stop(second.proc)
