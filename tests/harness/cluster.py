"""A real Kubernetes control plane for e2e tests, once per test session: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler (Pods run only on the process kubelet: harness/node.py).

Fixtures:
    kube       (session)  a testenv.control_plane.Cluster with crds/ applied and
                          Established: .kubeconfig, .kubectl(*args, input=, check=, timeout=),
                          .api_client(), .apply_crds()
    namespace  (function) a fresh namespace (its `default` ServiceAccount exists); deleted at
                          teardown without waiting (the namespace controller finishes it)

USE_EXISTING_CLUSTER=true uses the current kubeconfig instead of starting anything. Missing
binaries are a test failure naming `make control-plane`, never a skip: CI must not go green
without the real API server and controllers. A control-plane process that dies fails the test
that notices (every harness wait checks), with its log tail.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from testenv.control_plane import (
    Cluster,
    ControlPlaneError,
    LocalControlPlane,
    existing_cluster,
    resolve_assets,
    use_existing_cluster,
)

from harness import waiting


@pytest.fixture(scope="session")
def control_plane_assets() -> Path:
    """The cached binaries' folder; never builds, so a fresh checkout fails fast."""
    try:
        return resolve_assets(build=False)
    except ControlPlaneError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)  # outside `except`, so the message is not printed twice


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if use_existing_cluster():
        cluster = existing_cluster()
        cluster.apply_crds()
        yield cluster
        return
    assets = request.getfixturevalue("control_plane_assets")
    plane = LocalControlPlane(tmp_path_factory.mktemp("control-plane"), assets)
    try:
        _start(plane)
        waiting.health_checks.append(plane.check_running)
        yield plane
    finally:
        if plane.check_running in waiting.health_checks:
            waiting.health_checks.remove(plane.check_running)
        plane.stop()


def _start(plane: LocalControlPlane) -> None:
    """A startup failure becomes a plain test failure that shows the process's log tail."""
    try:
        plane.start()
    except ControlPlaneError as exc:
        problem = str(exc)
    else:
        plane.apply_crds()
        return
    pytest.fail(problem, pytrace=False)


def check_control_plane(kube: Cluster) -> None:
    """Fail (not hang) the test when a control-plane process has exited."""
    if isinstance(kube, LocalControlPlane):
        try:
            kube.check_running()
        except ControlPlaneError as exc:
            problem = str(exc)
        else:
            return
        pytest.fail(problem, pytrace=False)


def namespace_manifests(name: str) -> str:
    """A namespace as a platform team runs one: the `restricted` Pod Security Standard enforced (the
    PodSecurity admission plugin is part of kube-apiserver), so any pod the operator creates that
    breaks it fails a test."""
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}},
    ])


@pytest.fixture
def namespace(kube: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace named after the test, so leftovers in a shared cluster say where they came from."""
    check_control_plane(kube)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    kube.kubectl("apply", "-f", "-", input=namespace_manifests(name))
    # Pods are admitted once the ServiceAccount controller has made `default` (as in any cluster).
    waiting.wait_for(lambda: kube.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
                     timeout=30, message=f"ServiceAccount default in {name}")
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    check_control_plane(kube)
