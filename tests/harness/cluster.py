"""A real Kubernetes API server for e2e tests: kube-apiserver + etcd, once per test session.

Fixtures:
    kube       (session)  a testenv.control_plane.Cluster with crds/ applied and
                          Established: .kubeconfig, .kubectl(*args, input=, check=, timeout=),
                          .api_client(), .apply_crds()
    namespace  (function) a fresh namespace name; deleted at teardown without waiting

USE_EXISTING_CLUSTER=true uses the current kubeconfig instead of starting anything. Missing
binaries are a test failure naming `make control-plane`, never a skip: CI must not go green
without the real API server. There is no controller-manager, so deleted namespaces stay
Terminating and owner references are not garbage-collected: delete children explicitly.
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


@pytest.fixture(scope="session")
def control_plane_assets() -> Path:
    """The cached etcd/kube-apiserver folder; never builds, so a fresh checkout fails fast."""
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
        yield plane
    finally:
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


WORKER_ACCOUNT = "tributary-worker"  # what the Helm chart creates for the worker pods


def namespace_manifests(name: str) -> str:
    """A namespace as a platform team runs one: the `restricted` Pod Security Standard enforced (the
    PodSecurity admission plugin is part of kube-apiserver), and the worker ServiceAccount present."""
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": WORKER_ACCOUNT, "namespace": name}},
    ])


@pytest.fixture
def namespace(kube: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace named after the test, so leftovers in a shared cluster say where they came from."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    kube.kubectl("apply", "-f", "-", input=namespace_manifests(name))
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
