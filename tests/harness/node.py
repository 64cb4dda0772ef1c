"""The process kubelet: the node that runs Pods as local processes (testenv.kubelet).

Fixtures:
    process_kubelet  (session)   one testenv.kubelet.ProcessKubelet, registered as Node
                                 `process-kubelet`; it runs Pods only in namespaces labelled
                                 testenv.tributary.dev/process-kubelet=run
    local_node       (function)  labels the `namespace` fixture's namespace for it and gives the
                                 test hooks for that namespace: attempts, log, kill, wait_running

Namespaces not labelled (the chart tests') have their Pods scheduled to the node but never run, so
an installed operator Deployment cannot start reconciling other tests' objects. At teardown the
namespace's processes are stopped (SIGTERM, SIGKILL after at most 5 s) and the test fails if the
kubelet hit an unexpected error there. With USE_EXISTING_CLUSTER=true the tests that need it are
skipped: that cluster's own nodes run Pods.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from testenv.control_plane import Cluster, use_existing_cluster
from testenv.kubelet import NODE_NAME, SERVE_LABEL, ProcessKubelet
from testenv.podworker import Attempt

from harness.waiting import wait_for


def _schedulable(kube: Cluster) -> bool:
    node = json.loads(kube.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
    return ready and not node["spec"].get("taints")  # the node controller lifts not-ready once it sees Ready


@pytest.fixture(scope="session")
def process_kubelet(kube: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessKubelet]:
    if use_existing_cluster():
        pytest.skip("USE_EXISTING_CLUSTER=true: the cluster's own nodes run pods")
    kubelet = ProcessKubelet(kube.kubeconfig, tmp_path_factory.mktemp("process-kubelet"), f"{SERVE_LABEL}=run")
    kubelet.start()
    try:
        wait_for(lambda: _schedulable(kube), timeout=60, message=f"Node {NODE_NAME} Ready and untainted")
        yield kubelet
    finally:
        kubelet.stop()


@dataclass
class LocalNode:
    """The process kubelet's hooks for one namespace."""

    kubelet: ProcessKubelet
    namespace: str

    def attempts(self, job_name: str, index: int) -> list[Attempt]:
        return self.kubelet.attempts(self.namespace, job_name, index)

    def log(self, job_name: str, index: int, attempt: int = -1) -> str:
        return self.kubelet.log(self.namespace, job_name, index, attempt)

    def kill(self, job_name: str, index: int, sig: int = signal.SIGKILL) -> None:
        self.kubelet.kill(self.namespace, job_name, index, sig)

    def wait_running(self, job_name: str, index: int, timeout: float = 60) -> Attempt:
        return self.kubelet.wait_running(self.namespace, job_name, index, timeout)

    def pod_logs(self, pod_name: str) -> str:
        """Every run's log of one Pod (the kubelet's notes included), oldest first."""
        workers = [w for w in self.kubelet.pods(self.namespace) if w.name == pod_name]
        paths: list[Path] = [run.log_path for w in workers for run in w.runs()]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())


@pytest.fixture
def local_node(kube: Cluster, namespace: str, process_kubelet: ProcessKubelet) -> Iterator[LocalNode]:
    kube.kubectl("label", "namespace", namespace, f"{SERVE_LABEL}=run")
    try:
        yield LocalNode(process_kubelet, namespace)
    finally:
        process_kubelet.release_namespace(namespace)
    errors = process_kubelet.errors.get(namespace, []) + process_kubelet.errors.get("", [])
    assert not errors, "the process kubelet hit errors:\n" + "\n".join(errors)
