"""The local control plane is a real Kubernetes API server, and its CLI starts and stops cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from testenv.control_plane import (
    CRDS_DIR,
    Cluster,
    LocalControlPlane,
    use_existing_cluster,
)

# hack/build-control-plane.sh's default, overridable through the same variable.
K8S_VERSION = os.environ.get("K8S_VERSION", "1.37.2")
local_only = pytest.mark.skipif(use_existing_cluster(), reason="USE_EXISTING_CLUSTER=true: nothing is built or started")


@local_only
def test_apiserver_is_the_built_version(kube):
    version = json.loads(kube.kubectl("version", "--output=json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{K8S_VERSION}"


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
    command = [sys.executable, "-m", "testenv.control_plane", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)


@local_only
def test_cli_up_status_down_cycle(control_plane_assets, tmp_path):
    """A second, detached control plane beside the session's: up, use it, up again, down, all gone."""
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

        again = _cli("up", "--data-dir", data_dir, env=env)
        assert again.returncode == 0 and "already up" in again.stdout
        assert _cli("status", "--data-dir", data_dir, env=env).returncode == 0
        processes = LocalControlPlane(Path(data_dir)).processes
        assert [p.name for p in processes] == ["etcd", "kube-apiserver"]
        assert all(p.running() for p in processes)
    finally:
        down = _cli("down", "--data-dir", data_dir, env=env)
    assert down.returncode == 0, down.stderr
    assert not any(p.running() for p in processes)
    assert not Path(data_dir).exists()
    assert _cli("status", "--data-dir", data_dir, env=env).returncode == 1
