"""One Pod on the process kubelet: its containers' runs, restarts, deletion and status.

Driven by the kubelet's pods thread (sync() every poll); status() is what goes to pods/status.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .podenv import ConfigError, command_line, container_env
from .podstatus import (
    BACKOFF_RESET,
    ContainerView,
    backoff_delay,
    pod_conditions,
    pod_phase,
    restart_wanted,
    rfc3339,
    terminated_reason,
    termination_message,
)
from .runtime import EXIT_START_ERROR, Container, ContainerLaunch, Runtime, StartError

NOTE = "[process-kubelet]"  # the kubelet's own lines in a container's log
DEFAULT_GRACE = 30
CONFIG_RETRY = 1.0  # seconds between attempts to build a container's config (a missing Secret...)


@dataclass(frozen=True)
class Attempt:
    """A snapshot of one run of a container, for tests."""

    pod_name: str
    number: int  # position among the runs asked for (0 first)
    log_path: Path
    pid: int | None
    exit_code: int | None  # None while it runs; 128+N when killed by signal N
    running: bool


class Run:
    """One start of one container (a StartError is a run that never got a process)."""

    def __init__(self, pod_name: str, log_path: Path, message_path: Path, container: Container | None) -> None:
        self.pod_name, self.log_path, self.message_path, self.container = pod_name, log_path, message_path, container
        self.started, self.started_at = rfc3339(), 0.0
        self.finished = ""
        self.exit_code: int | None = None
        self.reason = ""
        self.message = ""
        self.killed = False

    @property
    def running(self) -> bool:
        return self.container is not None and self.exit_code is None

    def snapshot(self, number: int) -> Attempt:
        pid = self.container.pid if self.container else None
        return Attempt(self.pod_name, number, self.log_path, pid, self.exit_code, self.running)

    def terminated(self, runtime: str) -> dict[str, Any]:
        state = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started,
                 "finishedAt": self.finished}
        if self.message:
            state["message"] = self.message
        if self.container is not None:
            state["containerID"] = f"{runtime}://{self.container.pid}"
        return state


class _Slot:
    """One container of the Pod, across its restarts."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.runs: list[Run] = []
        self.waiting = ("ContainerCreating", "")
        self.next_start = 0.0
        self.consecutive = 0  # restarts under back-off, reset by a long run
        self.done = False  # ended for good (restartPolicy, or the Pod is being deleted)

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None


def note(log_path: Path, message: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as out:
        out.write(f"{NOTE} {message}\n")


class PodWorker:
    def __init__(self, pod: dict[str, Any], runtime: Runtime, directory: Path, kubeconfig: Path,
                 read: Callable[[str, str, str], dict[str, str] | None],
                 event: Callable[[dict[str, Any], str, str, str], None] = lambda *_: None) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        self.pod = pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.labels, self.annotations = dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})
        self.runtime, self.directory, self.kubeconfig = runtime, directory, kubeconfig
        self._read, self._event = read, event  # event(pod, type, reason, message): a Kubernetes Event
        self.policy = spec.get("restartPolicy", "Always")
        self.slots = [_Slot(container) for container in spec["containers"]]
        self.start_time = rfc3339()
        self.refused = "init containers are not supported by the process kubelet" if spec.get("initContainers") else ""
        self.deleting_since: float | None = None
        self.kill_at = 0.0
        self.written: dict[str, Any] | None = None

    def runs(self) -> list[Run]:
        return [run for slot in self.slots for run in slot.runs]

    # --- driving

    def sync(self, now: float) -> None:
        if self.refused:
            return
        for slot in self.slots:
            run = slot.current
            if run is not None and run.running:
                code = run.container.exit_code()
                if code is None:
                    if self.deleting_since is not None and now >= self.kill_at and not run.killed:
                        note(run.log_path, "grace period over: SIGKILL")
                        run.container.signal(signal.SIGKILL)
                        run.killed = True
                    continue
                self._finish(slot, run, code, now)
            if self.deleting_since is None and not slot.done and now >= slot.next_start:
                self._start(slot, now)  # also a first restart, which has no back-off

    def delete(self, now: float, grace_cap: float | None = None) -> None:
        """The Pod is being deleted: SIGTERM now, SIGKILL once its grace period is over, no restarts."""
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE))
        grace = min(grace, grace_cap) if grace_cap is not None else grace
        if self.deleting_since is not None:  # a second delete may shorten the grace period
            self.kill_at = min(self.kill_at, self.deleting_since + grace)
            return
        self.deleting_since, self.kill_at = now, now + grace
        for slot in self.slots:
            slot.done = True
            run = slot.current
            if run is not None and run.running:
                note(run.log_path, f"Killing: SIGTERM (grace period {grace:g}s)")
                run.container.signal(signal.SIGTERM)
                self._event(self.pod, "Normal", "Killing", f"Stopping container {slot.spec['name']}")

    def finished_stopping(self) -> bool:
        return self.deleting_since is not None and not any(run.running for run in self.runs())

    def _start(self, slot: _Slot, now: float) -> None:
        spec = slot.spec
        number = len(slot.runs)
        folder = self.directory / spec["name"]
        log_path, message_path = folder / f"{number}.log", folder / f"{number}.termination-log"
        try:
            variables = container_env(self.pod, spec, lambda kind, name: self._read(self.namespace, kind, name))
        except ConfigError as exc:  # kubelet's CreateContainerConfigError: retried while the Pod waits
            slot.waiting, slot.next_start = ("CreateContainerConfigError", str(exc)), now + CONFIG_RETRY
            return
        path_map = {spec.get("terminationMessagePath", "/dev/termination-log"): message_path}
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        for mount in spec.get("volumeMounts") or []:
            if "emptyDir" in volumes.get(mount["name"], {}):
                path_map[mount["mountPath"]] = self.directory / "volumes" / mount["name"]
                path_map[mount["mountPath"]].mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        message_path.write_bytes(b"")
        env = self._base_env() | variables
        launch = ContainerLaunch(spec["name"], spec.get("image", ""), command_line(spec, variables), env,
                                 log_path, self.directory / "work" / spec["name"], path_map)
        try:
            container: Container | None = self.runtime.start(launch)
        except StartError as exc:
            note(log_path, f"StartError: {exc}")
            self._event(self.pod, "Warning", "Failed", f"Error: {exc}")
            run = Run(self.name, log_path, message_path, None)
            run.message = str(exc)
            slot.runs.append(run)
            self._finish(slot, run, EXIT_START_ERROR, now, start_error=True)
            return
        run = Run(self.name, log_path, message_path, container)
        run.started_at = now
        slot.runs.append(run)
        note(log_path, f"Started container {spec['name']} (pid {container.pid}, run {number})")
        # No `kubectl logs` (the process kubelet serves no API): the event says where the log is.
        self._event(self.pod, "Normal", "Started", f"Started container {spec['name']} as pid {container.pid}; "
                                                    f"log: {log_path}")

    def _finish(self, slot: _Slot, run: Run, code: int, now: float, start_error: bool = False) -> None:
        run.exit_code, run.finished = code, rfc3339()
        run.reason = terminated_reason(code, start_error)
        if not start_error:
            policy = slot.spec.get("terminationMessagePolicy", "File")
            run.message = termination_message(run.message_path, run.log_path, policy, code)
        if self.deleting_since is not None or not restart_wanted(self.policy, code):
            slot.done = True
            return
        if run.started_at and now - run.started_at >= BACKOFF_RESET:
            slot.consecutive = 0
        delay = backoff_delay(slot.consecutive)
        slot.consecutive += 1
        slot.next_start = now + delay
        name = slot.spec["name"]
        if delay:
            message = f"back-off {delay:g}s restarting failed container={name} pod={self.name}"
            slot.waiting = ("CrashLoopBackOff", message)
        note(run.log_path, f"exited with code {code}; restarting in {delay:g}s (restartPolicy {self.policy})")

    def _base_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)  # the test virtualenv's tools come first
        # PYTHONPATH too, so pods of a worktree run its code as the tests' own process does.
        inherited = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        return inherited | {
            "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", os.defpath)]),
            "HOME": os.environ.get("HOME", str(self.directory)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": self.name,  # as a container runtime sets it
            "HF_HUB_OFFLINE": "1",  # nothing downloads a model at run time
            "TRANSFORMERS_OFFLINE": "1",
            # In place of the service-account token (none is mounted, and there is no kube-proxy for
            # the in-cluster address): kubernetes.config.load_config() reads KUBECONFIG.
            "KUBECONFIG": str(self.kubeconfig),
        }

    # --- status

    def status(self) -> dict[str, Any]:
        views, statuses = [], []
        for slot in self.slots:
            run = slot.current
            pending_restart = run is not None and not run.running and not slot.done
            views.append(ContainerView(
                running=run is not None and run.running,
                exit_code=run.exit_code if run is not None else None,
                will_restart=pending_restart))  # fmt: skip
            statuses.append(self._container_status(slot, run, pending_restart))
        phase = "Failed" if self.refused else pod_phase(views)
        if self.finished_stopping():  # a deleted Pod ends terminal, also when a container never ran
            phase = "Succeeded" if all(v.exit_code == 0 for v in views) else "Failed"
        ready = phase == "Running" and all(v.running for v in views) and self.deleting_since is None
        previous = (self.pod.get("status") or {}).get("conditions") or []
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": pod_conditions(phase, ready, rfc3339(), previous),
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        }
        if self.refused:
            status.update(reason="UnsupportedPod", message=self.refused)
        return status

    def _container_status(self, slot: _Slot, run: Run | None, pending_restart: bool) -> dict[str, Any]:
        runtime = self.runtime.name
        state: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
        last: dict[str, Any] = {"waiting": None, "running": None, "terminated": None}
        if run is None or pending_restart:
            reason, message = slot.waiting
            state["waiting"] = {"reason": reason, **({"message": message} if message else {})}
        elif run.running:
            state["running"] = {"startedAt": run.started}
        else:
            state["terminated"] = run.terminated(runtime)
        previous = run if pending_restart else (slot.runs[-2] if len(slot.runs) > 1 else None)
        if previous is not None:
            last["terminated"] = previous.terminated(runtime)
        container_id = f"{runtime}://{run.container.pid}" if run is not None and run.container else None
        return {"name": slot.spec["name"], "image": slot.spec.get("image", ""), "imageID": "",
                "containerID": container_id, "ready": run is not None and run.running and self.deleting_since is None,
                "started": run is not None and run.running, "restartCount": max(len(slot.runs) - 1, 0),
                "state": state, "lastState": last}
