"""The local control plane is a real Kubernetes API server with Kubernetes' own controllers, and its
CLI starts and stops it (with the process kubelet) cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from harness.operator import create_worker_account
from harness.waiting import wait_for
from testenv.control_plane import (
    CRDS_DIR,
    Cluster,
    ControlPlaneError,
    LocalControlPlane,
    use_existing_cluster,
)
from testenv.kubelet import NODE_NAME

# hack/build-control-plane.sh's default, overridable through the same variable.
K8S_VERSION = os.environ.get("K8S_VERSION", "1.37.2")
local_only = pytest.mark.skipif(use_existing_cluster(), reason="USE_EXISTING_CLUSTER=true: nothing is built or started")


@local_only
def test_apiserver_is_the_built_version(kube):
    version = json.loads(kube.kubectl("version", "--output=json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{K8S_VERSION}"


def test_new_namespaces_get_the_controller_managers_service_account_and_root_ca(kube, namespace):
    account = json.loads(kube.kubectl("-n", namespace, "get", "serviceaccount", "default", "-o", "json").stdout)
    assert account["metadata"]["uid"]
    wait_for(lambda: kube.kubectl("-n", namespace, "get", "configmap", "kube-root-ca.crt", check=False).returncode == 0,
             timeout=30, message="kube-root-ca.crt published")


def test_the_token_controller_fills_a_legacy_service_account_token_secret(kube, namespace):
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "default-token", "annotations": {"kubernetes.io/service-account.name": "default"}}}
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(secret))
    data = wait_for(lambda: json.loads(kube.kubectl("-n", namespace, "get", "secret", "default-token", "-o",
                                                    "json").stdout).get("data", {}).get("token"),
                    timeout=30, message="token controller filled the Secret")
    assert data


def get_namespace_labels(kube, namespace: str) -> dict[str, str]:
    return json.loads(kube.kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"]["labels"]


def test_restricted_pod_security_is_enforced_by_the_api_server(kube, namespace):
    """The process kubelet cannot enforce users (it runs processes as the test's user): the API
    server's Pod Security admission is what rejects pods that are not runAsNonRoot and so on."""
    labels = get_namespace_labels(kube, namespace)
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # every e2e namespace, by the fixture
    loose = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "loose"},
             "spec": {"containers": [{"name": "c", "image": "x.invalid/x", "command": ["true"]}]}}
    rejected = kube.kubectl("-n", namespace, "create", "-f", "-", input=yaml.safe_dump(loose), check=False)
    assert rejected.returncode != 0 and "violates PodSecurity" in rejected.stderr

    from tributary_operator.api.v1alpha1 import IngestionJob
    from tributary_operator.core.ingestion import OperatorDefaults, build_job, inline_target

    ij = IngestionJob.from_body({"apiVersion": "tributary.dev/v1alpha1", "kind": "IngestionJob",
                                 "metadata": {"name": "docs", "namespace": namespace}, "spec": {
        "source": {"type": "local", "uri": "/data"}, "target": {"inline": {
            "milvusUri": "http://m:19530", "collection": "c", "model": {"name": "all-MiniLM-L6-v2", "dimension": 3}}}}})
    template = build_job(ij, "docs-1", inline_target(ij.spec), OperatorDefaults())["spec"]["template"]
    worker = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker"}, "spec": template["spec"]}
    create_worker_account(kube, namespace)  # the ServiceAccount admission plugin looks it up first
    kube.kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(worker))


def test_configmap_can_be_created_read_and_deleted(kube, namespace):
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "greeting"}, "data": {"hello": "world"}}
    kube.kubectl("create", "--namespace", namespace, "--filename=-", input=yaml.safe_dump(manifest))

    with kube.api_client() as api:
        stored = client.CoreV1Api(api).read_namespaced_config_map("greeting", namespace)
    assert stored.data == {"hello": "world"}
    assert stored.metadata.uid  # assigned by the server, so the object really went through etcd

    kube.kubectl("delete", "--namespace", namespace, "configmap/greeting")
    gone = kube.kubectl("get", "--namespace", namespace, "configmap/greeting", check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


def test_server_side_field_validation_rejects_an_unknown_field(kube, namespace):
    # kubectl sends ?fieldValidation=Strict|Ignore and the API server decides. (The Python client
    # cannot be used here: its pydantic models refuse unknown fields before anything is sent.)
    typo = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo"}, "dataa": {"a": "b"}}
    manifest = yaml.safe_dump(typo)
    create = ("create", "--namespace", namespace, "--filename=-")
    rejected = kube.kubectl(*create, "--validate=strict", input=manifest, check=False)
    assert rejected.returncode != 0
    assert "Error from server (BadRequest)" in rejected.stderr
    assert 'strict decoding error: unknown field "dataa"' in rejected.stderr
    # The same manifest passes when the server is told to ignore unknown fields.
    kube.kubectl(*create, "--validate=ignore", input=manifest)


def _crd_names(folder: Path) -> list[str]:
    documents = (doc for path in sorted(folder.glob("*.y*ml")) for doc in yaml.safe_load_all(path.read_text()))
    return [doc["metadata"]["name"] for doc in documents if doc and doc.get("kind") == "CustomResourceDefinition"]


def _is_established(crd: dict) -> bool:
    conditions = crd.get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def test_crds_from_the_repository_are_established(kube):
    expected = _crd_names(CRDS_DIR)
    assert len(expected) == 3, expected
    items = json.loads(kube.kubectl("get", "crd", "--output=json").stdout)["items"]
    established = {crd["metadata"]["name"] for crd in items if _is_established(crd)}
    assert set(expected) <= established


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "testenv", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)


JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "hello"}, "spec": {"template": {"spec": {
    "restartPolicy": "Never", "containers": [{"name": "hello", "image": "unused.invalid/hello",
                                              "command": ["python", "-c", "print('hello from a pod')"]}]}}}}


@local_only
def test_cli_up_status_down_cycle(control_plane_assets, tmp_path):
    """A second, detached cluster beside the session's: up, run a Job on its kubelet, up again, a dead
    controller-manager reported, down, all gone."""
    data_dir = str(tmp_path / "cluster")
    tests = str(Path(__file__).resolve().parents[1])  # testenv is test infrastructure, not installed
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(control_plane_assets),
           "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    try:
        up = _cli("up", "--data-dir", data_dir, env=env)
        assert up.returncode == 0, up.stderr
        assert "export KUBECONFIG=" in up.stdout

        cluster = Cluster(Path(data_dir) / "kubeconfig")
        assert cluster.kubectl("get", "--raw=/readyz").stdout == "ok"
        assert cluster.kubectl("get", "namespace/default", "--output=name").stdout.strip() == "namespace/default"
        # What a person does after `make cluster-up`: apply a Job and watch its pod run.
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(JOB))
        cluster.kubectl("wait", "--for=condition=Complete", "job/hello", "--timeout=60s", timeout=70)
        (pod,) = json.loads(cluster.kubectl("get", "pods", "-l", "job-name=hello", "-o", "json").stdout)["items"]
        assert pod["spec"]["nodeName"] == NODE_NAME and pod["status"]["phase"] == "Succeeded"
        logs = list((Path(data_dir) / "kubelet" / "pods").glob(f"default_{pod['metadata']['name']}_*/hello/0.log"))
        assert "hello from a pod" in logs[0].read_text()

        again = _cli("up", "--data-dir", data_dir, env=env)
        assert again.returncode == 0 and "already up" in again.stdout
        assert _cli("status", "--data-dir", data_dir, env=env).returncode == 0
        processes = LocalControlPlane(Path(data_dir)).processes
        names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"]
        assert [p.name for p in processes] == names
        assert all(p.running() for p in processes)

        manager = processes[2]
        os.kill(manager.pid, signal.SIGKILL)
        wait_for(lambda: not manager.running(), timeout=10, message="controller-manager gone")
        status = _cli("status", "--data-dir", data_dir, env=env)
        assert status.returncode == 1 and "kube-controller-manager exited" in status.stdout
        with pytest.raises(ControlPlaneError, match="control-plane process exited: kube-controller-manager"):
            LocalControlPlane(Path(data_dir)).check_running()
    finally:
        down = _cli("down", "--data-dir", data_dir, env=env)
    assert down.returncode == 0, down.stderr
    assert not any(p.running() for p in processes)
    assert not Path(data_dir).exists()
    assert _cli("status", "--data-dir", data_dir, env=env).returncode == 1


def test_a_binary_missing_from_the_cache_is_a_one_line_error_naming_make_control_plane(tmp_path, monkeypatch):
    from testenv.control_plane import resolve_assets

    assets = tmp_path / "control-plane" / f"k8s-v{K8S_VERSION}-etcd-v{os.environ.get('ETCD_VERSION', '3.6.16')}"
    assets.mkdir(parents=True)
    for name in ("etcd", "kube-apiserver", "kube-scheduler"):  # no kube-controller-manager
        (assets / name).write_text("#!/bin/sh\n")
        (assets / name).chmod(0o755)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("TRIBUTARY_CACHE_DIR", str(tmp_path))
    with pytest.raises(ControlPlaneError) as raised:
        resolve_assets(build=False)
    message = str(raised.value)
    assert "\n" not in message and "make control-plane" in message and "kube-controller-manager" in message
