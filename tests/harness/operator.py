"""The operator under test: `tributary-operator` as a subprocess watching the test's namespace.

A subprocess (not kopf's in-thread runner) runs exactly what users run, and its logs are shown
when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tributary_operator.core.ingestion import OperatorDefaults
from tributary_workers.localservers import stop


@dataclass
class OperatorProcess:
    proc: subprocess.Popen
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def launch(kubeconfig: Path, namespace: str, log: Path) -> OperatorProcess:
    """`tributary-operator` watching one namespace, resyncing every second, logging to `log`."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), TRIBUTARY_RESYNC_SECONDS="1")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "tributary-operator"), "--namespace", namespace,
             "--metrics-port", "0", "--liveness", "", "--log-format", "plain", "--verbose"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return OperatorProcess(proc, log)


def create_worker_account(kube, namespace: str) -> None:
    """The workers' ServiceAccount, which the Helm chart creates in every watched namespace (the
    operator's pre-flight waits for it, and the ServiceAccount admission plugin needs it)."""
    kube.kubectl("-n", namespace, "create", "serviceaccount", OperatorDefaults.service_account)


@pytest.fixture
def operator(kube, namespace, tmp_path, request) -> Iterator[OperatorProcess]:
    create_worker_account(kube, namespace)
    running = launch(kube.kubeconfig, namespace, tmp_path / "operator.log")
    proc, log = running.proc, running.log
    yield running
    stop(proc)
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log ({log}) ---\n{running.logs()[-20000:]}")
