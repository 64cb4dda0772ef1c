"""The local process node runs Jobs and Deployments as a kubelet + controllers would, against the real apiserver.

Pods are small `python -c` scripts: the node resolves `python` on a PATH that starts with the
virtualenv's bin folder. Scripts report through files in the test's tmp_path, passed as args.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.waiting import wait_for
from kubernetes import client
from testenv.local_node import (
    COMPLETION_INDEX_KEY,
    LocalProcessNode,
    format_indexes,
    parse_indexes,
)

# Records what an index saw: its environment, argv, working directory and when it ran.
RECORD_ENVIRONMENT = textwrap.dedent("""
    import json, os, sys, time
    started = time.time()
    time.sleep(0.5)
    seen = {key: os.environ.get(key) for key in (
        "JOB_COMPLETION_INDEX", "TOKEN", "MODE", "CFG_mode", "CFG_greeting", "ECHO", "POD_NAME",
        "INDEX_ANNOTATION", "ABSENT", "KUBECONFIG", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HOSTNAME")}
    seen.update(arg=sys.argv[2], cwd=os.getcwd(), started=started, ended=time.time())
    with open(os.path.join(sys.argv[1], os.environ["JOB_COMPLETION_INDEX"] + ".json"), "w") as out:
        json.dump(seen, out)
""")
# The first attempt of each index runs until it is stopped; a retry succeeds at once.
FIRST_ATTEMPT_HANGS = textwrap.dedent("""
    import os, pathlib, sys, time
    marker = pathlib.Path(sys.argv[1]) / ("started-" + os.environ["JOB_COMPLETION_INDEX"])
    if marker.exists():
        sys.exit(0)
    marker.touch()
    time.sleep(60)
""")
HANGS = "import time; time.sleep(60)"
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


@pytest.fixture
def api(kube) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


def container(script: str, *args: str, **fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "unused.invalid/pod", "command": ["python", "-c", script, *args], **fields}


def create_job(api, namespace: str, name: str, main: dict[str, Any], **spec: Any) -> None:
    """An Indexed Job (unless spec says otherwise) of one completion, running `main`."""
    spec = {"completionMode": "Indexed", "completions": 1, "parallelism": 1, **spec}
    spec["template"] = {"spec": {"restartPolicy": "Never", "containers": [main]}}
    client.BatchV1Api(api).create_namespaced_job(namespace, {"metadata": {"name": name}, "spec": spec})


def read_job(api, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(client.BatchV1Api(api).read_namespaced_job(name, namespace, _preload_content=False).data)


def condition(job: dict[str, Any], kind: str) -> dict[str, str] | None:
    return next((c for c in job.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def wait_for_condition(api, namespace: str, name: str, kind: str, status: str = "True", timeout: float = 30) -> dict:
    """The Job once it has the condition; the Job as it last was is in the failure message."""

    def reached() -> dict[str, Any] | None:
        job = read_job(api, namespace, name)
        found = condition(job, kind)
        return job if found and found["status"] == status else None

    try:
        return wait_for(reached, timeout, message=f"Job {name} {kind}={status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast status: {read_job(api, namespace, name).get('status')}") from None


def counts(status: dict[str, Any], *fields: str) -> tuple[int, ...]:
    """Status counters; the apiserver omits those that are zero."""
    return tuple(status.get(name, 0) for name in fields)


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def test_index_text_format_matches_kubernetes():
    assert format_indexes([]) == ""
    assert format_indexes([0, 1, 2]) == "0-2"
    assert format_indexes([5, 0, 1, 3, 4, 7, 8, 9]) == "0,1,3-5,7-9"
    assert parse_indexes("0,1,3-5,7-9") == {0, 1, 3, 4, 5, 7, 8, 9}


def test_indexed_job_gets_its_index_and_environment_and_respects_parallelism(
    kube, api, namespace, local_node, tmp_path
):
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}})
    settings = {"mode": "fast", "greeting": "hi"}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": settings})
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "ECHO", "value": "$(MODE)-$(MODE) $$(MODE)"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "INDEX_ANNOTATION",
         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_KEY}']"}}},
        {"name": "ABSENT", "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "k", "optional": True}}},
    ]  # fmt: skip
    env_from = [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]
    main = container(RECORD_ENVIRONMENT, str(tmp_path), "index=$(JOB_COMPLETION_INDEX)", env=env, envFrom=env_from)
    create_job(api, namespace, "shards", main, completions=3, parallelism=2)

    job = wait_for_condition(api, namespace, "shards", "Complete")

    status = job["status"]
    assert status["completedIndexes"] == "0-2"
    assert counts(status, "succeeded", "failed", "active") == (3, 0, 0)
    assert condition(job, "SuccessCriteriaMet")["status"] == "True"
    assert status["completionTime"] >= status["startTime"]
    records = {index: json.loads((tmp_path / f"{index}.json").read_text()) for index in range(3)}
    for index, seen in records.items():
        assert seen["JOB_COMPLETION_INDEX"] == seen["INDEX_ANNOTATION"] == str(index)
        assert seen["arg"] == f"index={index}"
        assert (seen["TOKEN"], seen["MODE"], seen["CFG_mode"], seen["CFG_greeting"]) == ("s3cret", "fast", "fast", "hi")
        assert seen["ECHO"] == "fast-fast $(MODE)"
        assert seen["POD_NAME"].startswith(f"shards-{index}-") and seen["HOSTNAME"] == seen["POD_NAME"]
        assert seen["ABSENT"] is None
        assert seen["KUBECONFIG"] == str(kube.kubeconfig)
        assert seen["HF_HUB_OFFLINE"] == seen["TRANSFORMERS_OFFLINE"] == "1"
        assert [attempt.exit_code for attempt in local_node.attempts("shards", index)] == [0]
    assert len({seen["cwd"] for seen in records.values()}) == 3
    # At most two ran at once, and two did: parallelism is a limit the node uses.
    edges = sorted((t, step) for seen in records.values() for t, step in ((seen["started"], 1), (seen["ended"], -1)))
    running = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(running) == 2


def test_failing_index_is_retried_up_to_its_backoff_limit_then_fails_the_job(api, namespace, local_node):
    script = "import os, sys; index = os.environ['JOB_COMPLETION_INDEX']; print('index', index); sys.exit(index == '1')"
    create_job(api, namespace, "flaky", container(script), completions=2, parallelism=2, backoffLimitPerIndex=1)

    job = wait_for_condition(api, namespace, "flaky", "Failed")

    assert [attempt.exit_code for attempt in local_node.attempts("flaky", 0)] == [0]
    assert [attempt.exit_code for attempt in local_node.attempts("flaky", 1)] == [1, 1]
    assert local_node.log("flaky", 1) == "index 1\n"
    status = job["status"]
    assert (status["completedIndexes"], status["failedIndexes"]) == ("0", "1")
    assert counts(status, "succeeded", "failed", "active") == (1, 2, 0)
    assert condition(job, "FailureTarget")["reason"] == condition(job, "Failed")["reason"] == "FailedIndexes"
    assert condition(job, "Complete") is None


def test_a_killed_pod_is_retried_and_the_job_completes(api, namespace, local_node, tmp_path):
    create_job(api, namespace, "victim", container(FIRST_ATTEMPT_HANGS, str(tmp_path)))
    first = local_node.wait_running("victim", 0, timeout=30)
    wait_for(lambda: (tmp_path / "started-0").exists(), 10, message="first attempt under way")

    local_node.kill("victim", 0)

    job = wait_for_condition(api, namespace, "victim", "Complete")
    assert [attempt.exit_code for attempt in local_node.attempts("victim", 0)] == [128 + signal.SIGKILL, 0]
    assert counts(job["status"], "failed", "succeeded") == (1, 1)
    assert process_gone(first.pid)


def test_suspend_stops_the_pods_and_resume_runs_what_is_left(api, namespace, local_node, tmp_path):
    create_job(api, namespace, "pausable", container(FIRST_ATTEMPT_HANGS, str(tmp_path)), completions=2, parallelism=2)
    pids = [local_node.wait_running("pausable", index, timeout=30).pid for index in range(2)]
    wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, 10, message="first attempts under way")
    batch = client.BatchV1Api(api)

    batch.patch_namespaced_job("pausable", namespace, {"spec": {"suspend": True}})

    wait_for_condition(api, namespace, "pausable", "Suspended")
    wait_for(lambda: all(map(process_gone, pids)), 10, message="suspended pods stopped")
    status = wait_for(lambda: (s := read_job(api, namespace, "pausable")["status"])["terminating"] == 0 and s, 10)
    assert counts(status, "active", "ready") == (0, 0)
    assert "startTime" not in status  # cleared while suspended, as the Job controller does

    batch.patch_namespaced_job("pausable", namespace, {"spec": {"suspend": False}})

    job = wait_for_condition(api, namespace, "pausable", "Complete")
    assert condition(job, "Suspended")["status"] == "False"
    assert condition(job, "Suspended")["reason"] == "JobResumed"
    # Pods stopped by a suspension are not failures; each index ran once more.
    assert counts(job["status"], "failed", "succeeded") == (0, 2)
    assert job["status"]["completedIndexes"] == "0,1"
    assert [len(local_node.attempts("pausable", index)) for index in range(2)] == [2, 2]


def test_deleting_a_job_ends_its_processes(kube, api, namespace, local_node):
    for name in ("by-kubectl", "by-client"):
        create_job(api, namespace, name, container(HANGS))
    pids = [local_node.wait_running(name, 0, timeout=30).pid for name in ("by-kubectl", "by-client")]

    kube.kubectl("delete", "job", "by-kubectl", "--namespace", namespace, "--wait=false")
    # The Python client's default propagation for Jobs is `orphan`: the Job keeps a deletionTimestamp
    # and the orphan finalizer forever, as no garbage collector runs here. It counts as deleted.
    client.BatchV1Api(api).delete_namespaced_job("by-client", namespace)

    wait_for(lambda: all(map(process_gone, pids)), 15, message="processes of deleted Jobs gone")


def test_active_deadline_kills_the_pods_and_fails_the_job(api, namespace, local_node):
    create_job(api, namespace, "slow", container(HANGS), activeDeadlineSeconds=1)
    pid = local_node.wait_running("slow", 0, timeout=30).pid

    job = wait_for_condition(api, namespace, "slow", "Failed")

    assert condition(job, "Failed")["reason"] == "DeadlineExceeded"
    assert job["status"]["failed"] == 1
    assert process_gone(pid)


def test_a_container_without_command_fails_with_a_clear_message_counted_by_backoff_limit(api, namespace, local_node):
    no_command = {"name": "main", "image": "unused.invalid/pod"}
    create_job(api, namespace, "no-command", no_command, completionMode="NonIndexed", backoffLimit=1)

    job = wait_for_condition(api, namespace, "no-command", "Failed")

    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 2
    assert "completedIndexes" not in job["status"]  # NonIndexed
    assert [attempt.exit_code for attempt in local_node.attempts("no-command", 0)] == [128, 128]
    assert "has no `command`" in local_node.log("no-command", 0)


def test_a_pod_waits_for_a_missing_secret_then_runs(api, namespace, local_node):
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    create_job(api, namespace, "patient", container("import os, sys; sys.exit(os.environ['TOKEN'] != 'ok')", env=env))

    # Like kubelet's CreateContainerConfigError: the pod is pending (active, not ready), not failed.
    wait_for(lambda: "Secret 'later' not found" in local_node.log("patient", 0), 10, message="waiting noted")
    status = wait_for(lambda: read_job(api, namespace, "patient").get("status"), 10)
    assert counts(status, "active", "ready", "failed") == (1, 0, 0)
    assert local_node.attempts("patient", 0)[0].pid is None

    secret = {"metadata": {"name": "later"}, "stringData": {"token": "ok"}}
    client.CoreV1Api(api).create_namespaced_secret(namespace, secret)

    job = wait_for_condition(api, namespace, "patient", "Complete")
    assert counts(job["status"], "failed", "succeeded") == (0, 1)


def test_deployment_runs_its_replicas_restarts_them_and_scales(api, namespace, local_node, tmp_path):
    apps = client.AppsV1Api(api)
    seen = tmp_path / "pod-names"
    seen.mkdir()
    script = "import os, sys, time; open(os.path.join(sys.argv[1], os.environ['POD_NAME']), 'a'); time.sleep(60)"
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    pod_spec = {"containers": [container(script, str(seen), env=env)]}
    template = {"metadata": {"labels": {"app": "gateway"}}, "spec": pod_spec}
    spec = {"replicas": 2, "selector": {"matchLabels": {"app": "gateway"}}, "template": template}
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "gateway"}, "spec": spec})

    def status() -> dict[str, Any]:
        return json.loads(apps.read_namespaced_deployment(
            "gateway", namespace, _preload_content=False).data).get("status", {})  # fmt: skip

    wait_for(lambda: status().get("readyReplicas") == 2, 15, message="2 ready replicas")
    processes = local_node.deployment_processes("gateway")
    assert len(processes) == 2
    pod_names = sorted(p.pod_name for p in processes)
    wait_for(lambda: sorted(path.name for path in seen.iterdir()) == pod_names, 10, message="each saw its POD_NAME")
    assert (status()["availableReplicas"], status()["updatedReplicas"], status()["observedGeneration"]) == (2, 2, 1)

    os.kill(processes[0].pid, signal.SIGKILL)  # a crashed container restarts in the same pod
    restarted = wait_for(
        lambda: [p for p in local_node.deployment_processes("gateway") if p.number == 1], 15, message="restart"
    )
    assert restarted[0].pod_name == processes[0].pod_name

    apps.patch_namespaced_deployment("gateway", namespace, {"spec": {"replicas": 1}})

    wait_for(lambda: status().get("readyReplicas") == 1 and status()["observedGeneration"] == 2, 15, message="scaled")
    assert [p.pod_name for p in local_node.deployment_processes("gateway")] == [processes[0].pod_name]  # newest went
    wait_for(lambda: process_gone(processes[1].pid), 10, message="scaled-down replica's process gone")


def test_processes_that_ignore_sigterm_are_killed_after_the_grace_period(kube, api, namespace, tmp_path):
    # A node of its own, with a short grace period (the fixture's is 5 s).
    node = LocalProcessNode(kube.kubeconfig, namespace, tmp_path / "node", grace_period=0.5)
    with node:
        for name in ("suspended", "running"):
            create_job(api, namespace, name, container(IGNORES_SIGTERM))
        suspended, running = (node.wait_running(name, 0, timeout=30) for name in ("suspended", "running"))
        client.BatchV1Api(api).patch_namespaced_job("suspended", namespace, {"spec": {"suspend": True}})
        killed = wait_for(lambda: node.attempts("suspended", 0)[0].exit_code, 10, message="SIGKILL after the grace")
        assert killed == 128 + signal.SIGKILL
    assert process_gone(running.pid)  # stop() killed it too
    assert not node.errors
