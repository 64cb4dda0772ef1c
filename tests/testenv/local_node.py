"""TEST INFRASTRUCTURE ONLY: a fake node that runs the pods of Jobs and Deployments as local processes.

    !!! Tributary never runs like this. Users run it on kind or any real cluster. !!!

The local control plane (control_plane.py: kube-apiserver + etcd) has no kubelet, no scheduler and
no controller-manager, so the Jobs and Deployments the operator creates would never run.
`LocalProcessNode` stands in for kubelet *plus* the Job and Deployment controllers, for one
namespace, so end-to-end tests can watch the operator drive real worker processes:

- it polls the namespace's batch/v1 Jobs and apps/v1 Deployments (no watches: a poll cannot miss
  an event and needs no resync logic);
- it runs the first container of each pod template as a subprocess of `command` + `args`, with
  the container's `env` and `envFrom` resolved from the API as kubelet does (Secrets, ConfigMaps,
  the downward API's fieldRef, `$(VAR)` expansion), JOB_COMPLETION_INDEX for Indexed Jobs, and
  KUBECONFIG pointing at the test cluster in place of the in-cluster service account;
- it writes what happened through the status subresources, in the form the v1.37 apiserver
  validates (see docs/local-control-plane.md, "The local process node").

What it does NOT do: no images or containers (commands run on this machine, resolved on a PATH
that starts with the test virtualenv's bin folder); no Pod objects in the API (so no `kubectl get
pods` or `kubectl logs`: use `log()`); no resources, probes (a running process is Ready), volumes,
init or sidecar containers, security contexts or networking; no exponential back-off (a failed Job
pod is replaced at the next poll); no podFailurePolicy, successPolicy or podReplacementPolicy; no
ReplicaSets and no rolling updates (a changed Deployment template recreates every replica).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .control_plane import _die_with_parent

logger = logging.getLogger(__name__)

NODE_NAME = "local-process-node"
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
JOB_CONTROLLER = "kubernetes.io/job-controller"  # Jobs with another spec.managedBy are not ours
MERGE_PATCH = "application/merge-patch+json"  # replaces lists (conditions) whole: no merge-key surprises
EXIT_START_ERROR = 128  # what containerd reports for a container that could not be started
RESTART_BACKOFF = 0.5  # seconds before a Deployment replica's first restart; doubles up to the max
MAX_RESTART_BACKOFF = 5.0
# The Job controller injects this into every container of an Indexed Job.
COMPLETION_INDEX_ENV = {
    "name": "JOB_COMPLETION_INDEX",
    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_KEY}']"}},
}
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")
_SUBSCRIPTED_FIELD = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")
_POD_NAME_SUFFIX = string.ascii_lowercase + string.digits


def format_indexes(indexes: Iterable[int]) -> str:
    """Kubernetes' text form of a set of indexes: runs of three or more become first-last ({0,1,2,5,6} -> "0-2,5,6")."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        run = ordered[start : end + 1]
        parts.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(map(str, run)))
        start = end + 1
    return ",".join(parts)


def parse_indexes(text: str | None) -> set[int]:
    """The inverse of format_indexes ("0-2,5" -> {0, 1, 2, 5}); None or "" is the empty set."""
    indexes: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        indexes.update(range(int(first), int(last or first) + 1))
    return indexes


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(moment: datetime | None) -> str | None:
    """metav1.Time's wire form: whole seconds, UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _expand(text: str, variables: dict[str, str]) -> str:
    """kubelet's $(VAR) expansion: defined names are replaced, unknown ones kept, $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return variables.get(match[1], match[0])

    return _REFERENCE.sub(replace, text)


def _signal_group(pid: int, sig: int) -> None:
    """Signal a run's whole process group (it leads its own session), as a runtime kills a whole container."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


class _NotReady(Exception):
    """The pod cannot start yet (a Secret or ConfigMap it needs is missing): kubelet's
    CreateContainerConfigError, retried at every poll while the pod stays pending."""


class _CannotRun(Exception):
    """The pod can never start here (no command, no such executable, an unsupported reference)."""


@dataclass(frozen=True)
class Attempt:
    """A snapshot of one process the node started: one attempt ("pod") of a Job index, or one
    container start of a Deployment replica."""

    pod_name: str
    number: int  # the index's attempt (0 first), or the replica's restart count
    log_path: Path  # the process's stdout and stderr, plus the node's own notes prefixed [local-process-node]
    pid: int | None  # None while it waits to start (for example for a missing Secret)
    exit_code: int | None  # None until it ends; 128+N when killed by signal N, as containers report it
    running: bool


@dataclass
class _Pod:
    """The pod a process stands for: what the downward API (fieldRef) can see of it."""

    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    service_account: str
    directory: Path  # the working directory of its processes; their logs sit next to it
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def field_value(self, path: str) -> str:
        """A fieldRef as kubelet resolves it; the pod's IPs are the host's loopback address."""
        subscripted = _SUBSCRIPTED_FIELD.fullmatch(path)
        if subscripted:
            return (self.labels if subscripted[1] == "labels" else self.annotations).get(subscripted[2], "")
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": NODE_NAME,
            "spec.serviceAccountName": self.service_account,
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        if path not in values:
            raise _CannotRun(f"fieldRef {path!r} is not supported by the local node")
        return values[path]


class _Run:
    """One process start of a pod: a whole Job pod (restartPolicy Never), or one container start of
    a Deployment replica. It waits (not started yet), runs, stops (SIGTERM sent) or is done."""

    def __init__(self, pod: _Pod, number: int) -> None:
        self.pod = pod
        self.number = number
        self.log_path = pod.directory.with_name(f"{pod.name}.{number}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.done = False
        self.waiting_for = ""
        self.stop_sent_at: float | None = None
        self.counted = True  # whether a non-zero exit counts as a failed pod (not when suspended)
        self.accounted = False  # a Job has added its outcome to its counters

    @property
    def running(self) -> bool:
        return self.process is not None and not self.done

    @property
    def stopping(self) -> bool:
        return self.stop_sent_at is not None and not self.done

    def snapshot(self) -> Attempt:
        pid = self.process.pid if self.process else None
        return Attempt(self.pod.name, self.number, self.log_path, pid, self.exit_code, self.running)

    def note(self, message: str) -> None:
        """Write the node's own message into the run's log, where a test failure shows it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as output:
            output.write(f"[{NODE_NAME}] {message}\n")

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        self.pod.directory.mkdir(parents=True, exist_ok=True)
        self.waiting_for = ""
        with self.log_path.open("ab") as output:
            try:
                self.process = subprocess.Popen(
                    argv, cwd=self.pod.directory, env=env, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
                )  # fmt: skip
            except OSError as exc:
                self.fail_to_start(f"cannot execute {argv[0]}: {exc}")

    def wait_for(self, reason: str) -> None:
        if reason != self.waiting_for:
            self.note(f"waiting to start: {reason}")
            self.waiting_for = reason

    def fail_to_start(self, reason: str) -> None:
        self.note(f"cannot start: {reason}")
        self.exit_code, self.done = EXIT_START_ERROR, True

    def poll(self, now: float, grace_period: float) -> None:
        """Reap the process if it ended; SIGKILL it once it outlives its grace period."""
        if self.process is None or self.done:
            return
        code = self.process.poll()
        if code is None:
            if self.stop_sent_at is not None and now - self.stop_sent_at >= grace_period:
                _signal_group(self.process.pid, signal.SIGKILL)
            return
        _signal_group(self.process.pid, signal.SIGKILL)  # what it left behind goes with it, as with a container
        self.exit_code = 128 - code if code < 0 else code
        self.done = True

    def stop(self, now: float, reason: str, counted: bool = True) -> None:
        """SIGTERM now (poll() sends SIGKILL after the grace period); a run never started is just dropped."""
        if self.done or self.stop_sent_at is not None:
            return
        self.counted = counted
        self.note(f"stopping: {reason}")
        if self.process is None:
            self.done = True
            return
        self.stop_sent_at = now
        _signal_group(self.process.pid, signal.SIGTERM)


def _terminate(runs: list[_Run], grace_period: float) -> None:
    """Stop runs and wait until they are gone: SIGTERM together, SIGKILL what remains after the grace period."""
    now = time.monotonic()
    for run in runs:
        run.stop(now, "the node is stopping")
    deadline = now + grace_period
    for run in runs:
        if run.process is None or run.done:
            continue
        try:
            run.process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _signal_group(run.process.pid, signal.SIGKILL)
            run.process.wait()
        run.poll(time.monotonic(), grace_period)


class _JobState:
    """What the node knows of one Job (by uid): the runs of each index and its status counters.

    NonIndexed Jobs get `completions` slots numbered like indexes (a failed slot is retried, and
    the Job completes when every slot has succeeded), without JOB_COMPLETION_INDEX or
    completedIndexes. Work-queue Jobs (completions unset) run as completions=1.
    """

    def __init__(self, job: dict[str, Any]) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        self.name, self.uid = meta["name"], meta["uid"]
        self.indexed = spec.get("completionMode") == "Indexed"
        self.runs: dict[int, list[_Run]] = {}
        # Start from whatever status is already there: the apiserver rejects counters going down.
        self.succeeded: int = status.get("succeeded", 0)
        self.failed: int = status.get("failed", 0)
        self.completed = parse_indexes(status.get("completedIndexes")) if self.indexed else set(range(self.succeeded))
        self.failed_indexes = parse_indexes(status.get("failedIndexes"))
        self.failures_per_index: Counter[int] = Counter()
        start = status.get("startTime")
        self.start_time = datetime.fromisoformat(start) if start else None
        self.conditions: list[dict[str, str]] = list(status.get("conditions") or [])
        self.completion_time: str | None = status.get("completionTime")
        self.outcome: tuple[str, str, str] | None = None  # (terminal condition, reason, message) once decided
        self.finished = False
        self.finished_before = self._condition_is("Complete", "True") or self._condition_is("Failed", "True")
        self.written: dict[str, Any] | None = None

    def live_runs(self) -> list[_Run]:
        return [run for runs in self.runs.values() for run in runs if not run.done]

    def _condition_is(self, kind: str, status: str) -> bool:
        return any(c["type"] == kind and c["status"] == status for c in self.conditions)

    def set_condition(self, kind: str, status: str, reason: str, message: str) -> None:
        """Add or update a condition; its lastTransitionTime moves only when its status changes."""
        now = _rfc3339(_utcnow())
        existing = next((c for c in self.conditions if c["type"] == kind), None)
        if existing is None:
            self.conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                                    "lastProbeTime": now, "lastTransitionTime": now})  # fmt: skip
        elif (existing["status"], existing.get("reason"), existing.get("message")) != (status, reason, message):
            if existing["status"] != status:
                existing["lastTransitionTime"] = now
            existing.update(status=status, reason=reason, message=message, lastProbeTime=now)

    def account(self, spec: dict[str, Any]) -> None:
        """Count the runs that ended since the last poll: exit 0 completes the index, anything else
        is a failed pod (unless the node stopped it for a suspension); with backoffLimitPerIndex,
        an index that failed more than that many times is a failed index."""
        per_index_limit = spec.get("backoffLimitPerIndex")
        for index, runs in self.runs.items():
            for run in runs:
                if not run.done or run.accounted:
                    continue
                run.accounted = True
                if run.exit_code == 0:
                    self.completed.add(index)
                    self.succeeded += 1
                elif run.exit_code is not None and run.counted:
                    self.failed += 1
                    self.failures_per_index[index] += 1
                    if per_index_limit is not None and self.failures_per_index[index] > per_index_limit:
                        self.failed_indexes.add(index)

    def suspend(self, now: float) -> None:
        """As the Job controller does: delete the pods (not counted as failures), say Suspended, clear startTime."""
        for run in self.live_runs():
            run.stop(now, "the Job is suspended", counted=False)
        self.set_condition("Suspended", "True", "JobSuspended", "Job suspended")
        self.start_time = None  # the apiserver accepts a new startTime only after it was cleared while suspended

    def resume(self) -> None:
        if self._condition_is("Suspended", "True"):
            self.set_condition("Suspended", "False", "JobResumed", "Job resumed")
        if self.start_time is None:
            self.start_time = _utcnow()

    def decide(self, spec: dict[str, Any]) -> tuple[str, str, str] | None:
        """Whether the Job is finished now, with the Job controller's reasons and messages."""
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and self.start_time and (_utcnow() - self.start_time).total_seconds() >= deadline:
            return "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
        if self.failed > spec["backoffLimit"]:  # defaulted by the apiserver (6, or MaxInt32 per index)
            return "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        max_failed = spec.get("maxFailedIndexes")
        if max_failed is not None and len(self.failed_indexes) > max_failed:
            message = "Job has exceeded the specified maximal number of failed indexes"
            return "Failed", "MaxFailedIndexesExceeded", message
        if len(self.completed | self.failed_indexes) >= (spec.get("completions") or 1):
            if self.failed_indexes:
                return "Failed", "FailedIndexes", "Job has failed indexes"
            return "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
        return None

    def finish_when_stopped(self) -> None:
        """Add the terminal condition once no process is left: the apiserver refuses a finished Job
        with active or terminating pods, and a Complete/Failed condition without the interim
        SuccessCriteriaMet/FailureTarget one that set_outcome wrote first."""
        if self.outcome is None or self.finished or self.live_runs():
            return
        kind, reason, message = self.outcome
        if kind == "Complete":
            self.completion_time = _rfc3339(_utcnow())
        self.set_condition(kind, "True", reason, message)
        self.finished = True

    def set_outcome(self, outcome: tuple[str, str, str], now: float) -> None:
        kind, reason, message = self.outcome = outcome
        self.set_condition("SuccessCriteriaMet" if kind == "Complete" else "FailureTarget", "True", reason, message)
        for run in self.live_runs():
            run.stop(now, f"the Job is finishing ({reason})")

    def status(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The whole status, for a merge patch (None removes a field)."""
        live = self.live_runs()
        active = [run for run in live if not run.stopping]
        per_index = spec.get("backoffLimitPerIndex") is not None
        return {
            "startTime": _rfc3339(self.start_time),
            "active": len(active),
            "ready": sum(run.running for run in active),  # no probes: a running process is Ready
            "terminating": len(live) - len(active),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "completedIndexes": format_indexes(self.completed) if self.indexed else None,
            "failedIndexes": format_indexes(self.failed_indexes) if per_index else None,
            "conditions": [dict(condition) for condition in self.conditions] or None,
            "completionTime": self.completion_time,
        }


class _Replica:
    """One pod of a Deployment; restartPolicy Always, so its container restarts in the same pod,
    after a back-off that doubles with each restart (like CrashLoopBackOff, but in seconds)."""

    def __init__(self, pod: _Pod, template_hash: str) -> None:
        self.pod = pod
        self.template_hash = template_hash
        self.runs = [_Run(pod, number=0)]
        self.restart_at: float | None = None
        self.leaving = False  # scaled down or outdated: it goes once its process is gone

    @property
    def current(self) -> _Run:
        return self.runs[-1]

    def leave(self, now: float) -> None:
        self.leaving = True
        self.current.stop(now, "scaled down or replaced by a new template")

    def restart_if_due(self, now: float) -> None:
        """Schedule a restart when the container has ended; start a new run once it is due."""
        if not self.current.done:
            return
        if self.restart_at is None:
            delay = min(RESTART_BACKOFF * 2 ** (len(self.runs) - 1), MAX_RESTART_BACKOFF)
            self.restart_at = now + delay
            self.current.note(f"exited with code {self.current.exit_code}; restarting in {delay:.1f}s")
        elif now >= self.restart_at:
            self.restart_at = None
            self.runs.append(_Run(self.pod, number=len(self.runs)))


@dataclass
class _DeploymentState:
    name: str
    uid: str
    replicas: list[_Replica] = field(default_factory=list)  # oldest first
    written: dict[str, Any] | None = None

    def live_runs(self) -> list[_Run]:
        return [replica.current for replica in self.replicas if not replica.current.done]


class LocalProcessNode:
    """TEST INFRASTRUCTURE: runs the pods of one namespace's Jobs and Deployments as local processes.

    It stands in for kubelet and the Job/Deployment controllers on the local control plane, which
    has none; see the module docstring for what it does and does not do. A background thread polls
    every poll_interval seconds; the test hooks (kill, attempts, log, wait_running,
    deployment_processes) are thread-safe. Processes get SIGTERM, then SIGKILL after grace_period
    seconds (the pod's terminationGracePeriodSeconds is ignored: its default of 30 s would slow
    tests down). stop() ends every process; so do atexit and, if the test process is killed,
    PR_SET_PDEATHSIG.
    """

    def __init__(
        self, kubeconfig: Path, namespace: str, work_dir: Path, poll_interval: float = 0.2, grace_period: float = 5.0
    ) -> None:
        self.kubeconfig = Path(kubeconfig).absolute()
        self.namespace = namespace
        self.work_dir = Path(work_dir).absolute()
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.errors: list[str] = []  # unexpected failures (a rejected status update...): tests assert none
        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._core = client.CoreV1Api(self._api)
        self._batch = client.BatchV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)
        self._jobs: dict[str, _JobState] = {}
        self._deployments: dict[str, _DeploymentState] = {}
        self._orphans: list[_Run] = []  # runs whose Job or Deployment was deleted, until they are gone
        self._lock = threading.RLock()
        self._polled = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LocalProcessNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalProcessNode:
        if self._thread is not None:
            raise RuntimeError("the node was already started")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        self._thread = threading.Thread(target=self._loop, name=f"{NODE_NAME}/{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every process (SIGTERM, then SIGKILL after the grace period) and the polling thread."""
        atexit.unregister(self.stop)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:  # the thread already did this, unless it died
            _terminate(self._live_runs(), self.grace_period)
        self._api.close()

    # Test hooks.

    def attempts(self, job_name: str, index: int) -> list[Attempt]:
        """Every attempt of one index of a Job, oldest first (for NonIndexed Jobs, index is the slot)."""
        with self._lock:
            state = self._jobs.get(job_name)
            return [run.snapshot() for run in state.runs.get(index, [])] if state else []

    def log(self, job_name: str, index: int, attempt: int = -1) -> str:
        """One attempt's stdout and stderr (and the node's notes); the latest by default."""
        path = self.attempts(job_name, index)[attempt].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, job_name: str, index: int, sig: int = signal.SIGKILL) -> None:
        """Signal the running attempt of an index, as if its pod died: it counts as a failed attempt
        and is retried if the backoff limits allow."""
        with self._lock:
            state = self._jobs.get(job_name)
            runs = state.runs.get(index, []) if state else []
            if not runs or not runs[-1].running:
                raise LookupError(f"Job {job_name!r} has no running process for index {index}")
            _signal_group(runs[-1].process.pid, sig)

    def wait_running(self, job_name: str, index: int, timeout: float = 30) -> Attempt:
        """Wait until an index has a running attempt (not one being stopped) and return it."""
        deadline = time.monotonic() + timeout
        with self._polled:
            while True:
                state = self._jobs.get(job_name)
                runs = state.runs.get(index, []) if state else []
                if runs and runs[-1].running and not runs[-1].stopping:
                    return runs[-1].snapshot()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [run.snapshot() for run in runs]
                    raise TimeoutError(f"Job {job_name!r} index {index} not running after {timeout}s; attempts: {seen}")
                self._polled.wait(remaining)

    def deployment_processes(self, name: str) -> list[Attempt]:
        """The running processes of a Deployment's replicas (not those being stopped), oldest replica first."""
        with self._lock:
            state = self._deployments.get(name)
            replicas = state.replicas if state else []
            return [r.current.snapshot() for r in replicas if not r.leaving and r.current.running]

    # The polling thread.

    def _loop(self) -> None:
        """The only thread that starts processes, so PR_SET_PDEATHSIG (tied to it) ends them if it dies."""
        try:
            while not self._stopping.is_set():
                try:
                    self._poll()
                except Exception as exc:  # the API may be briefly unreachable; keep polling
                    self._record("poll", exc)
                self._stopping.wait(self.poll_interval)
        finally:
            with self._lock:
                _terminate(self._live_runs(), self.grace_period)

    def _record(self, context: str, exc: Exception) -> None:
        detail = f"{exc.status} {exc.reason}: {exc.body}" if isinstance(exc, ApiException) else repr(exc)
        message = f"{context}: {detail}"
        if message not in self.errors:
            logger.error("%s: %s", NODE_NAME, message)
            self.errors.append(message)

    def _live_runs(self) -> list[_Run]:
        states: list[_JobState | _DeploymentState] = [*self._jobs.values(), *self._deployments.values()]
        return [run for state in states for run in state.live_runs()] + [r for r in self._orphans if not r.done]

    def _list(self, list_call: Callable[..., Any]) -> dict[str, dict[str, Any]]:
        """The namespace's objects by name, as raw JSON (no client models to reject newer fields);
        an object being deleted (deletionTimestamp, e.g. stuck on the `orphan` finalizer that no
        garbage collector removes here) counts as gone."""
        items = json.loads(list_call(self.namespace, _preload_content=False).data)["items"]
        return {item["metadata"]["name"]: item for item in items if not item["metadata"].get("deletionTimestamp")}

    def _poll(self) -> None:
        jobs = {
            name: job for name, job in self._list(self._batch.list_namespaced_job).items()
            if job["spec"].get("managedBy", JOB_CONTROLLER) == JOB_CONTROLLER
        }  # fmt: skip
        deployments = self._list(self._apps.list_namespaced_deployment)
        with self._polled:
            now = time.monotonic()
            self._forget_deleted(self._jobs, jobs, now)
            self._forget_deleted(self._deployments, deployments, now)
            for run in self._orphans:
                run.poll(now, self.grace_period)
            self._orphans = [run for run in self._orphans if not run.done]
            kinds = (("Job", self._sync_job, jobs), ("Deployment", self._sync_deployment, deployments))
            for kind, sync, objects in kinds:
                for name, obj in objects.items():
                    try:
                        sync(obj, now)
                    except Exception as exc:  # one broken object must not stop the others
                        self._record(f"{kind} {name}", exc)
            self._polled.notify_all()

    def _forget_deleted(self, states: dict[str, Any], present: dict[str, dict[str, Any]], now: float) -> None:
        """Objects gone from the API (or re-created under the same name): their pods are deleted."""
        for name in list(states):
            if name in present and present[name]["metadata"]["uid"] == states[name].uid:
                continue
            for run in states.pop(name).live_runs():
                run.stop(now, "its owner was deleted")
                self._orphans.append(run)

    # Jobs.

    def _sync_job(self, job: dict[str, Any], now: float) -> None:
        spec = job["spec"]
        state = self._jobs.get(job["metadata"]["name"])
        if state is None:
            state = self._jobs[job["metadata"]["name"]] = _JobState(job)
        if state.finished_before:
            return  # finished before this node saw it: nothing to run, and its status is someone else's
        for run in state.live_runs():
            run.poll(now, self.grace_period)
        state.account(spec)
        if state.outcome is None:
            if spec.get("suspend"):
                state.suspend(now)
            else:
                state.resume()
                outcome = state.decide(spec)
                if outcome:
                    state.set_outcome(outcome, now)
                else:
                    self._start_job_pods(state, spec)
        state.finish_when_stopped()
        self._write_status(state, state.status(spec), self._batch.patch_namespaced_job_status)

    def _start_job_pods(self, state: _JobState, spec: dict[str, Any]) -> None:
        """Retry pods waiting to start, then start the lowest pending indexes up to spec.parallelism."""
        template = spec["template"]
        extra_env = [COMPLETION_INDEX_ENV] if state.indexed else []
        for run in state.live_runs():
            if run.process is None:
                self._launch(run, template, extra_env)
        free = spec["parallelism"] - len(state.live_runs())  # defaulted to 1 by the apiserver
        for index in range(spec.get("completions") or 1):
            if free <= 0:
                break
            runs = state.runs.setdefault(index, [])
            if index in state.completed or index in state.failed_indexes or (runs and not runs[-1].done):
                continue
            run = _Run(self._job_pod(state, index, template), number=len(runs))
            runs.append(run)
            self._launch(run, template, extra_env)
            free -= 1

    def _job_pod(self, state: _JobState, index: int, template: dict[str, Any]) -> _Pod:
        """A pod as the Job controller names and labels it (<job>-<index>-<random> for Indexed Jobs)."""
        suffix = "".join(secrets.choice(_POD_NAME_SUFFIX) for _ in range(5))
        labels, annotations = self._template_metadata(template)
        name = f"{state.name}-{suffix}"
        if state.indexed:
            name = f"{state.name}-{index}-{suffix}"
            labels[COMPLETION_INDEX_KEY] = annotations[COMPLETION_INDEX_KEY] = str(index)
        account = template["spec"].get("serviceAccountName", "default")
        return _Pod(name, self.namespace, labels, annotations, account, self.work_dir / "jobs" / state.name / name)

    # Deployments.

    def _sync_deployment(self, deployment: dict[str, Any], now: float) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        state = self._deployments.setdefault(meta["name"], _DeploymentState(meta["name"], meta["uid"]))
        template = spec["template"]
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        for replica in state.replicas:
            replica.current.poll(now, self.grace_period)
        state.replicas = [r for r in state.replicas if not (r.leaving and r.current.done)]
        # A changed template recreates every replica; past the desired count, the newest go first.
        serving = [r for r in state.replicas if not r.leaving]
        for replica in serving:
            if replica.template_hash != template_hash:
                replica.leave(now)
        serving = [r for r in serving if not r.leaving]
        desired = spec["replicas"]  # defaulted to 1 by the apiserver
        for replica in serving[desired:]:
            replica.leave(now)
        serving = serving[:desired]
        for _ in range(desired - len(serving)):
            replica = _Replica(self._deployment_pod(state, template_hash, template), template_hash)
            state.replicas.append(replica)
            serving.append(replica)
        for replica in serving:
            replica.restart_if_due(now)
            if replica.current.process is None and not replica.current.done:
                self._launch(replica.current, template, [])
        ready = sum(r.current.running for r in serving)
        status = {
            "observedGeneration": meta["generation"],
            "replicas": len(serving),
            "updatedReplicas": sum(r.template_hash == template_hash for r in serving),
            "readyReplicas": ready,  # no probes: a running process is Ready, and Available at once
            "availableReplicas": ready,
            "unavailableReplicas": max(desired - ready, 0),
        }
        self._write_status(state, status, self._apps.patch_namespaced_deployment_status)

    def _deployment_pod(self, state: _DeploymentState, template_hash: str, template: dict[str, Any]) -> _Pod:
        """A pod named and labelled as the Deployment's ReplicaSet would: <deployment>-<hash>-<random>."""
        suffix = "".join(secrets.choice(_POD_NAME_SUFFIX) for _ in range(5))
        name = f"{state.name}-{template_hash}-{suffix}"
        labels, annotations = self._template_metadata(template)
        labels["pod-template-hash"] = template_hash
        account = template["spec"].get("serviceAccountName", "default")
        directory = self.work_dir / "deployments" / state.name / name
        return _Pod(name, self.namespace, labels, annotations, account, directory)

    # Both.

    @staticmethod
    def _template_metadata(template: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        meta = template.get("metadata") or {}
        return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})

    def _write_status(
        self, state: _JobState | _DeploymentState, status: dict[str, Any], patch: Callable[..., Any]
    ) -> None:
        """Patch the status subresource when it changed; a 404 means the object was just deleted."""
        if status == state.written:
            return
        try:
            patch(state.name, self.namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        state.written = status

    def _launch(self, run: _Run, template: dict[str, Any], extra_env: list[dict[str, Any]]) -> None:
        """Start a run of the template's first container, or note why it cannot start (yet)."""
        try:
            argv, env = self._command_and_env(run.pod, template["spec"]["containers"][0], extra_env)
        except _NotReady as exc:
            run.wait_for(str(exc))
        except _CannotRun as exc:
            run.fail_to_start(str(exc))
        else:
            run.start(argv, env)

    def _command_and_env(
        self, pod: _Pod, container: dict[str, Any], extra_env: list[dict[str, Any]]
    ) -> tuple[list[str], dict[str, str]]:
        variables = self._container_env(pod, container, extra_env)
        command = container.get("command")
        if not command:
            raise _CannotRun(
                f"container {container['name']!r} has no `command`: the local node runs no images, so "
                "it cannot fall back to the image's ENTRYPOINT"
            )
        argv = [_expand(arg, variables) for arg in [*command, *container.get("args", [])]]
        venv_bin = str(Path(sys.executable).parent)  # the test virtualenv's tools come first
        env = {
            "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", os.defpath)]),
            "HOME": os.environ.get("HOME", str(self.work_dir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": pod.name,  # as a container runtime sets it
            "HF_HUB_OFFLINE": "1",  # tests never download models
            "TRANSFORMERS_OFFLINE": "1",
            # In place of the in-cluster service account (no token is mounted): workers that call
            # the Kubernetes API use kubernetes.config.load_config(), which reads KUBECONFIG.
            "KUBECONFIG": str(self.kubeconfig),
            **variables,
        }
        executable = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env["PATH"])
        if executable is None:
            raise _CannotRun(f"executable {argv[0]!r} not found on PATH={env['PATH']}")
        return [executable, *argv[1:]], env

    def _container_env(self, pod: _Pod, container: dict[str, Any], extra_env: list[dict[str, Any]]) -> dict[str, str]:
        """The container's variables as kubelet builds them: envFrom first, then env in order, each
        value's $(VAR) references expanded with the variables defined before it."""
        variables: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                kind, ref = "Secret", source["secretRef"]
            else:
                kind, ref = "ConfigMap", source["configMapRef"]
            data = self._read_data(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise _NotReady(f"{kind} {ref['name']!r} not found")
            variables.update({source.get("prefix", "") + key: value for key, value in data.items()})
        own = container.get("env", [])
        names = {var["name"] for var in own}
        for var in [*own, *(var for var in extra_env if var["name"] not in names)]:
            if "valueFrom" in var:
                value = self._value_from(var["valueFrom"], pod)
                if value is None:  # an optional reference to something missing: left unset
                    continue
            else:
                value = _expand(var.get("value", ""), variables)
            variables[var["name"]] = value
        return variables

    def _value_from(self, source: dict[str, Any], pod: _Pod) -> str | None:
        if "fieldRef" in source:
            return pod.field_value(source["fieldRef"]["fieldPath"])
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if key in source:
                ref = source[key]
                data = self._read_data(kind, ref["name"])
                if data is not None and ref["key"] in data:
                    return data[ref["key"]]
                if ref.get("optional"):
                    return None
                missing = f"{kind} {ref['name']!r}" if data is None else f"key {ref['key']!r} in {kind} {ref['name']!r}"
                raise _NotReady(f"{missing} not found")
        raise _CannotRun(f"valueFrom {', '.join(source)} is not supported by the local node")

    def _read_data(self, kind: str, name: str) -> dict[str, str] | None:
        """A Secret's (decoded) or ConfigMap's data; None when it does not exist."""
        read = self._core.read_namespaced_secret if kind == "Secret" else self._core.read_namespaced_config_map
        try:
            obj = json.loads(read(name, self.namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = obj.get("data") or {}
        if kind == "Secret":
            return {key: base64.b64decode(value).decode(errors="surrogateescape") for key, value in data.items()}
        return data
