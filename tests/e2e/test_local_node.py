"""Kubernetes' own controllers and scheduler, with the process kubelet running the Pods: the
semantics the operator relies on (per-index Job retries, podFailurePolicy, SIGTERM then SIGKILL
after the grace period, restart back-off, namespace deletion) and the kubelet's own contract.

Pods are small `python -c` scripts: the kubelet resolves `python` on a PATH that starts with the
virtualenv's bin folder.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from typing import Any

import yaml
from harness.waiting import wait_for
from testenv.kubelet import CAPACITY, NODE_NAME, SERVE_LABEL

# Index 1 always fails with 1 (retried); index 3 fails with 42, which the podFailurePolicy says a
# retry cannot fix. Every index writes its termination message through a mapped path.
INDEXED = textwrap.dedent("""
    import os, sys
    index = os.environ["JOB_COMPLETION_INDEX"]
    with open(os.environ["REPORT_FILE"], "w") as out:
        out.write(f"index {index} of pod {os.environ['POD_NAME']}")
    sys.exit({"1": 1, "3": 42}.get(index, 0))
""")
# Says when SIGTERM arrives and exits 0 shortly after, as a draining worker would.
DRAINS = textwrap.dedent("""
    import os, signal, sys, time
    def drain(*_):
        print("got SIGTERM in", os.environ["POD_NAME"], flush=True)
        time.sleep(0.3)
        sys.exit(0)
    signal.signal(signal.SIGTERM, drain)
    print("serving as", os.environ["POD_NAME"], flush=True)
    while True:
        time.sleep(0.1)
""")
IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
                   "time.sleep(120)")


# Test namespaces enforce the `restricted` Pod Security Standard, as the operator's pods must pass it.
RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
              "seccompProfile": {"type": "RuntimeDefault"}}


def container(script: str, **fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "unused.invalid/pod", "command": ["python", "-c", script],
            "securityContext": RESTRICTED, **fields}


def apply(kube, namespace: str, manifest: dict[str, Any]) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(manifest))


def get(kube, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(kube.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def pods(kube, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ("pods", "-l", selector) if selector else ("pods",)
    return get(kube, namespace, *args)["items"]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    found = [c for c in conditions if c["type"] == kind and c["status"] == "True"]
    return found[0] if found else None


def pod(name: str, script: str, restart: str = "Never", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "containers": [container(script)], **spec}}


def test_the_node_is_registered_with_capacity_and_a_heartbeat_lease(kube, local_node):
    node = json.loads(kube.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    assert node["status"]["allocatable"]["cpu"] == CAPACITY["cpu"]
    assert node["status"]["allocatable"]["memory"] == CAPACITY["memory"]
    assert condition(node, "Ready")["reason"] == "KubeletReady"
    lease = json.loads(kube.kubectl("-n", "kube-node-lease", "get", "lease", NODE_NAME, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == NODE_NAME and lease["spec"]["renewTime"]
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]


def test_indexed_job_retries_per_index_and_fails_an_index_by_pod_failure_policy(kube, namespace, local_node):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "idx"}, "spec": {
        "completionMode": "Indexed", "completions": 4, "parallelism": 4, "backoffLimitPerIndex": 1,
        "podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}]},
        "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [container(
            INDEXED, env=[{"name": "REPORT_FILE", "value": "/dev/termination-log"},
                          {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])]}}}}
    apply(kube, namespace, job)
    # The Job controller retries a failed index after its 10 s back-off: one retry fits in 60 s.
    done = wait_for(lambda: (j := get(kube, namespace, "job", "idx")) and condition(j, "Failed") and j,
                    timeout=90, interval=0.5, message="Job idx Failed")
    status = done["status"]
    assert condition(done, "Failed")["reason"] == "FailedIndexes"
    assert (status["completedIndexes"], status["failedIndexes"], status["succeeded"]) == ("0,2", "1,3", 2)
    by_index: dict[str, list[dict]] = {}
    for item in pods(kube, namespace, "batch.kubernetes.io/job-name=idx"):
        index = item["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        by_index.setdefault(index, []).append(item)
    assert {index: len(items) for index, items in by_index.items()} == {"0": 1, "1": 2, "2": 1, "3": 1}
    for index, items in by_index.items():
        for item in items:
            terminated = item["status"]["containerStatuses"][0]["state"]["terminated"]
            assert terminated["exitCode"] == {"1": 1, "3": 42}.get(index, 0)
            assert terminated["message"] == f"index {index} of pod {item['metadata']['name']}"
            assert item["status"]["phase"] == ("Succeeded" if index in "02" else "Failed")
    assert [a.exit_code for a in local_node.attempts("idx", 1)] == [1, 1]


def test_a_deployment_scaled_down_sends_sigterm_and_its_pods_exit_within_the_grace_period(kube, namespace, local_node):
    labels = {"app": "drain"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "drain"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "terminationGracePeriodSeconds": 10, "containers": [container(DRAINS, env=[
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])]}}}}
    apply(kube, namespace, deployment)
    wait_for(lambda: get(kube, namespace, "deployment", "drain")["status"].get("readyReplicas") == 3,
             timeout=60, message="3 replicas ready")
    before = {p["metadata"]["name"] for p in pods(kube, namespace, "app=drain")}
    replicaset = get(kube, namespace, "replicasets")["items"][0]
    assert replicaset["metadata"]["ownerReferences"][0]["name"] == "drain"  # a real ReplicaSet

    kube.kubectl("-n", namespace, "scale", "deployment", "drain", "--replicas=1")
    wait_for(lambda: len(pods(kube, namespace, "app=drain")) == 1, timeout=30, message="scaled to one pod")
    (kept,) = {p["metadata"]["name"] for p in pods(kube, namespace, "app=drain")}
    removed = before - {kept}
    assert len(removed) == 2
    for name in removed:
        log = local_node.pod_logs(name)
        assert f"got SIGTERM in {name}" in log and "SIGKILL" not in log, log
        (run,) = [r for w in local_node.kubelet.pods(namespace) if w.name == name for r in w.runs()]
        assert run.exit_code == 0
    survivor = [p for p in pods(kube, namespace, "app=drain")][0]
    assert survivor["status"]["phase"] == "Running" and condition(survivor, "Ready")


def test_a_pod_that_ignores_sigterm_is_killed_after_its_grace_period(kube, namespace, local_node):
    apply(kube, namespace, pod("stubborn", IGNORES_SIGTERM, terminationGracePeriodSeconds=2))
    wait_for(lambda: "up" in local_node.pod_logs("stubborn"), timeout=60, message="stubborn started")
    kube.kubectl("-n", namespace, "delete", "pod", "stubborn", "--wait=true", "--timeout=30s")
    (run,) = [r for w in local_node.kubelet.pods(namespace) for r in w.runs()]
    assert run.exit_code == 137  # SIGKILL
    log = local_node.pod_logs("stubborn")
    assert "Killing: SIGTERM (grace period 2s)" in log and "grace period over: SIGKILL" in log


def test_restart_policy_on_failure_restarts_with_back_off(kube, namespace, local_node):
    apply(kube, namespace, pod("crash", "import sys; sys.exit(3)", restart="OnFailure"))

    def backing_off():
        status = get(kube, namespace, "pod", "crash")["status"]
        (container_status,) = status.get("containerStatuses") or [{}]
        waiting = (container_status.get("state") or {}).get("waiting") or {}
        return waiting.get("reason") == "CrashLoopBackOff" and status

    status = wait_for(backing_off, timeout=60, message="crash in CrashLoopBackOff")
    container_status = status["containerStatuses"][0]
    assert status["phase"] == "Running"  # restarting is not finished
    assert container_status["restartCount"] >= 1  # the first restart is immediate, then 10 s, 20 s...
    assert container_status["lastState"]["terminated"]["exitCode"] == 3
    assert "back-off 10s" in container_status["state"]["waiting"]["message"]


def test_a_command_not_on_path_fails_with_start_error(kube, namespace, local_node):
    manifest = pod("missing", "")
    manifest["spec"]["containers"][0]["command"] = ["no-such-command-anywhere"]
    apply(kube, namespace, manifest)
    status = wait_for(lambda: (s := get(kube, namespace, "pod", "missing")["status"]).get("phase") == "Failed" and s,
                      timeout=60, message="missing Failed")
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("StartError", 128)
    assert 'exec: "no-such-command-anywhere": executable file not found in $PATH' in terminated["message"]


def test_a_missing_secret_holds_the_container_until_it_exists(kube, namespace, local_node):
    manifest = pod("needs-secret", "import os; print('token', os.environ['TOKEN'])")
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    apply(kube, namespace, manifest)

    def waiting_reason():
        statuses = get(kube, namespace, "pod", "needs-secret")["status"].get("containerStatuses") or [{}]
        return ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason")

    wait_for(lambda: waiting_reason() == "CreateContainerConfigError", timeout=60, message="config error")
    kube.kubectl("-n", namespace, "create", "secret", "generic", "later", "--from-literal=token=s3cret")
    wait_for(lambda: get(kube, namespace, "pod", "needs-secret")["status"].get("phase") == "Succeeded",
             timeout=30, message="needs-secret Succeeded")
    assert "token s3cret" in local_node.pod_logs("needs-secret")
    described = kube.kubectl("-n", namespace, "describe", "pod", "needs-secret").stdout
    assert "Started container main as pid" in described and "log: " in described  # where `kubectl logs` is not


def test_a_namespace_delete_completes_and_stops_its_pods(kube, process_kubelet):
    name = f"t-ns-delete-{secrets.token_hex(3)}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, f"{SERVE_LABEL}=run")
    wait_for(lambda: kube.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0, timeout=30)
    apply(kube, name, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "terminationGracePeriodSeconds": 5, "containers": [container(DRAINS, env=[
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])]}}}})
    wait_for(lambda: any(r.running for w in process_kubelet.pods(name) for r in w.runs()), timeout=60,
             message="web running")
    kube.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", timeout=130)
    assert kube.kubectl("get", "namespace", name, check=False).returncode != 0
    runs = [r for w in process_kubelet.pods(name) for r in w.runs()]
    assert runs and all(not r.running and r.exit_code == 0 for r in runs)


def test_pods_in_namespaces_not_handed_to_the_kubelet_never_run(kube, namespace, process_kubelet, local_node):
    other = f"{namespace}-off"
    kube.kubectl("create", "namespace", other)
    try:
        wait_for(lambda: kube.kubectl("-n", other, "get", "sa", "default", check=False).returncode == 0, timeout=30)
        apply(kube, other, pod("ignored", "print('must not run')"))
        wait_for(lambda: get(kube, other, "pod", "ignored")["spec"].get("nodeName") == NODE_NAME, timeout=30,
                 message="ignored bound to the node")
        apply(kube, namespace, pod("served", "print('ran')"))  # a barrier: the kubelet polled since
        wait_for(lambda: get(kube, namespace, "pod", "served")["status"].get("phase") == "Succeeded", timeout=60)
        ignored = get(kube, other, "pod", "ignored")["status"]
        assert ignored["phase"] == "Pending" and "containerStatuses" not in ignored
        assert process_kubelet.pods(other) == []
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false")
