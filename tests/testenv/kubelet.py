"""TEST INFRASTRUCTURE ONLY: a process kubelet. It runs the Pods bound to its Node as local processes.

    !!! Tributary never runs like this. Users run it on kind or any real cluster. !!!

It does the job kubelet does and nothing more: Kubernetes' own controllers (Job, ReplicaSet,
Deployment, garbage collector...) and scheduler run in control_plane. It registers a Node (a
generous fake capacity, Ready, a heartbeat Lease in kube-node-lease), polls the Pods bound to it,
runs each container through a `runtime.Runtime` (today `ProcessRuntime`: local processes, no
images), and writes real Pod status: Pending -> Running (Ready; containerStatuses with
restartCount) -> Succeeded/Failed with exit codes and termination messages. restartPolicy
Always/OnFailure/Never with kubelet's back-off. A deleted Pod gets SIGTERM, SIGKILL after its
grace period, then is removed. Not done: probes, resources (nothing is limited), init and sidecar
containers (refused), volumes other than emptyDir (mapped to per-pod folders), users and
securityContext (processes run as the test's user: restricted Pod Security admission, in the API
server, is what checks those fields), networking (pods share the host's, podIP 127.0.0.1).

`namespace_selector` scopes it: Pods bound to the node in other namespaces are never run (they stay
Pending) and only their deletion is completed. Tests use that, so the chart tests' operator
Deployment never starts. CLI: `python -m testenv.kubelet --kubeconfig K --work-dir D`.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import logging
import platform
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .podworker import Attempt, PodWorker
from .rest import STRATEGIC_MERGE_PATCH, ApiError, Rest
from .runtime import ProcessRuntime, Runtime

logger = logging.getLogger("process-kubelet")

NODE_NAME = "process-kubelet"
SERVE_LABEL = "testenv.tributary.dev/process-kubelet"  # namespaces a test fixture hands to the kubelet
# Fake, generous and documented: requests (the examples ask 1 CPU / 2 GiB a shard) must fit, or
# shards stay Pending while their IngestionJob says Running. Nothing is enforced.
CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "200Gi"}
LEASE_SECONDS, RENEW_SECONDS, NODE_STATUS_SECONDS = 40, 10, 60
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
JOB_NAME = "batch.kubernetes.io/job-name"


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProcessKubelet:
    """See the module docstring. start() registers the Node and starts two threads (pods, heartbeat);
    stop() ends every process (SIGTERM, SIGKILL after the grace period). Test hooks: attempts, log,
    kill, wait_running, release_namespace; `errors` holds unexpected failures, by namespace."""

    def __init__(self, kubeconfig: Path, work_dir: Path, namespace_selector: str | None = None,
                 runtime: Runtime | None = None, poll_interval: float = 0.25) -> None:
        self.kubeconfig = Path(kubeconfig).absolute()
        self.work_dir = Path(work_dir).absolute()
        self.namespace_selector = namespace_selector
        self.runtime = runtime or ProcessRuntime()
        self.poll_interval = poll_interval
        self.errors: dict[str, list[str]] = {}
        self._rest = Rest(self.kubeconfig)
        self._workers: dict[str, PodWorker] = {}  # by Pod uid, while the Pod or its processes exist
        self._history: list[PodWorker] = []  # every Pod it ran, for the test hooks
        self._released: set[str] = set()
        self._polls = 0
        self._lock = threading.RLock()
        self._ticked = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle

    def start(self) -> ProcessKubelet:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._register()
        atexit.register(self.stop)
        for target, name in ((self._pods_loop, "pods"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"{NODE_NAME}/{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        with self._lock:  # the pods thread did this, unless it died
            self._terminate(list(self._workers.values()))
        self._rest.close()

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the Node and its heartbeat

    def _register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": {
            "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            "node.tributary.dev/process-kubelet": "true"}}}  # fmt: skip
        try:
            created = self._rest.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = self._rest.get(f"/api/v1/nodes/{NODE_NAME}")
        self._node_uid = created["metadata"]["uid"]
        self._post_node_status()
        self._renew_lease()

    def _post_node_status(self) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        healthy = [("MemoryPressure", "KubeletHasSufficientMemory"), ("DiskPressure", "KubeletHasNoDiskPressure"),
                   ("PIDPressure", "KubeletHasSufficientPID")]
        conditions = [{"type": kind, "status": "False", "reason": reason, "lastHeartbeatTime": now,
                       "lastTransitionTime": now} for kind, reason in healthy]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now,
                           "lastTransitionTime": now, "message": "process kubelet is posting ready status"})
        status = {"capacity": CAPACITY, "allocatable": CAPACITY, "conditions": conditions,
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                {"type": "Hostname", "address": NODE_NAME}],
                  "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                               "osImage": "process kubelet (test infrastructure)", "operatingSystem": "linux",
                               "architecture": platform.machine(), "containerRuntimeVersion": "process://",
                               "kubeletVersion": "v0.0.0-process", "kubeProxyVersion": ""}}  # fmt: skip
        self._rest.patch(f"/api/v1/nodes/{NODE_NAME}/status", {"status": status}, STRATEGIC_MERGE_PATCH)

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE_NAME}"
        spec = {"holderIdentity": NODE_NAME, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _micro_time()}
        try:
            self._rest.patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME, "uid": self._node_uid}
            self._rest.create(path.rsplit("/", 1)[0], {"metadata": {"name": NODE_NAME, "ownerReferences": [owner]},
                                                       "spec": spec})

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(RENEW_SECONDS):
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= NODE_STATUS_SECONDS:
                    self._post_node_status()
                    last_status = time.monotonic()
            except Exception as exc:  # the API may be briefly unreachable: the next beat retries
                logger.warning("heartbeat: %s", exc)

    # --- Pods

    def _pods_loop(self) -> None:
        """The only thread that starts processes, so PR_SET_PDEATHSIG (tied to it) ends them if it dies."""
        try:
            while not self._stopping.is_set():
                try:
                    self._tick()
                except Exception as exc:  # keep serving; the error is kept for the tests to see
                    self._record("", f"poll: {exc!r}")
                self._stopping.wait(self.poll_interval)
        finally:
            with self._lock:
                self._terminate(list(self._workers.values()))

    def _served(self) -> set[str] | None:
        if self.namespace_selector is None:
            return None
        items = self._rest.get("/api/v1/namespaces", labelSelector=self.namespace_selector)["items"]
        return {ns["metadata"]["name"] for ns in items}

    def _tick(self) -> None:
        pods = self._rest.get("/api/v1/pods", fieldSelector=f"spec.nodeName={NODE_NAME}")["items"]
        served = self._served()
        with self._ticked:
            now = time.monotonic()
            seen = set()
            for pod in pods:
                meta = pod["metadata"]
                seen.add(meta["uid"])
                try:
                    self._sync(pod, served, now)
                except Exception as exc:  # one broken Pod must not stop the others
                    self._record(meta["namespace"], f"pod {meta['name']}: {exc!r}")
            for uid, worker in list(self._workers.items()):
                if uid not in seen:  # force-deleted, or its namespace was released: only processes remain
                    worker.delete(now)
                    worker.sync(now)
                    if worker.finished_stopping():
                        del self._workers[uid]
            self._polls += 1
            self._ticked.notify_all()

    def _sync(self, pod: dict[str, Any], served: set[str] | None, now: float) -> None:
        meta = pod["metadata"]
        worker = self._workers.get(meta["uid"])
        if worker is None:
            namespace = meta["namespace"]
            ours = (served is None or namespace in served) and namespace not in self._released
            if meta.get("deletionTimestamp"):
                self._remove(pod)  # never ran here (or already stopped): nothing to wait for
                return
            if not ours or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return
            worker = PodWorker(pod, self.runtime, self._pod_dir(pod), self.kubeconfig, self._read_data, self._event)
            self._workers[meta["uid"]] = worker
            self._history.append(worker)
        worker.pod = pod
        if meta.get("deletionTimestamp"):
            worker.delete(now)
        worker.sync(now)
        status = worker.status()
        if status != worker.written:
            self._write_status(pod, status)
            worker.written = status
        if meta.get("deletionTimestamp") and worker.finished_stopping():
            self._remove(pod)
            del self._workers[meta["uid"]]

    def _pod_dir(self, pod: dict[str, Any]) -> Path:
        """kubelet's /var/log/pods layout: <namespace>_<name>_<uid>."""
        meta = pod["metadata"]
        return self.work_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self._rest.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                             {"metadata": {"uid": meta["uid"]}, "status": status}, STRATEGIC_MERGE_PATCH)
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone, or re-created under the same name
                raise

    def _remove(self, pod: dict[str, Any]) -> None:
        """The last step of a deletion, as kubelet does it: delete with grace 0, for this uid only."""
        meta = pod["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}
        try:
            self._rest.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def _event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on the Pod, as kubelet records them (`kubectl describe pod` shows it)."""
        meta, now = pod["metadata"], datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {"metadata": {"generateName": f"{meta['name']}."}, "type": kind, "reason": reason,
                 "message": message[:1024], "count": 1, "firstTimestamp": now, "lastTimestamp": now,
                 "source": {"component": "kubelet", "host": NODE_NAME},
                 "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"],
                                    "name": meta["name"], "uid": meta["uid"]}}
        try:
            self._rest.create(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except ApiError as exc:  # an Event is a courtesy: never fail a Pod for it (its namespace may be going)
            logger.warning("event %s on %s: %s", reason, meta["name"], exc)

    def _read_data(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = self._rest.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        data = obj.get("data") or {}
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="surrogateescape") for k, v in data.items()}
        return data

    def _terminate(self, workers: list[PodWorker], grace_cap: float | None = None) -> None:
        """Stop the workers' processes and wait: SIGTERM now, SIGKILL after each Pod's grace period."""
        now = time.monotonic()
        for worker in workers:
            worker.delete(now, grace_cap)
        while any(not worker.finished_stopping() for worker in workers):
            now = time.monotonic()
            for worker in workers:
                worker.sync(now)
            time.sleep(0.05)

    def _record(self, namespace: str, message: str) -> None:
        found = self.errors.setdefault(namespace, [])
        if message not in found:
            logger.error("%s", message)
            found.append(message)

    # --- test hooks (thread-safe)

    def release_namespace(self, namespace: str, grace_cap: float = 5.0) -> None:
        """Stop running the namespace's Pods at once (a test's teardown), waiting at most grace_cap
        seconds per Pod before SIGKILL; their deletion is completed later, when the namespace goes."""
        with self._lock:
            self._released.add(namespace)
            doomed = {uid: w for uid, w in self._workers.items() if w.namespace == namespace}
            self._terminate(list(doomed.values()), grace_cap)
            for uid in doomed:
                self._workers.pop(uid, None)

    def pods(self, namespace: str, **labels: str) -> list[PodWorker]:
        with self._lock:
            return [w for w in self._history if w.namespace == namespace
                    and all(w.labels.get(k) == v for k, v in labels.items())]

    def attempts(self, namespace: str, job_name: str, index: int) -> list[Attempt]:
        """Every run of an Indexed Job's index, oldest first: one per Pod (restartPolicy Never)."""
        with self._lock:
            workers = [w for w in self.pods(namespace) if w.labels.get(JOB_NAME) == job_name
                       and w.annotations.get(COMPLETION_INDEX) == str(index)]
            runs = [run for w in workers for run in w.runs()]
            return [run.snapshot(number) for number, run in enumerate(sorted(runs, key=lambda r: r.started))]

    def log(self, namespace: str, job_name: str, index: int, attempt: int = -1) -> str:
        path = self.attempts(namespace, job_name, index)[attempt].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, namespace: str, job_name: str, index: int, sig: int = signal.SIGKILL) -> None:
        """Signal the running attempt of an index, as if its container died."""
        with self._lock:
            for worker in self.pods(namespace):
                if worker.labels.get(JOB_NAME) == job_name and worker.annotations.get(COMPLETION_INDEX) == str(index):
                    for run in worker.runs():
                        if run.running:
                            run.container.signal(sig)
                            return
        raise LookupError(f"Job {job_name!r} has no running process for index {index}")

    def wait_polls(self, count: int = 2, timeout: float = 30) -> None:
        """Wait until the pods thread has gone through `count` more polls: a barrier before asserting
        that something did not happen (a Pod not run)."""
        with self._ticked:
            target, deadline = self._polls + count, time.monotonic() + timeout
            while self._polls < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the process kubelet did not poll {count} times in {timeout}s")
                self._ticked.wait(remaining)

    def wait_running(self, namespace: str, job_name: str, index: int, timeout: float = 60) -> Attempt:
        deadline = time.monotonic() + timeout
        with self._ticked:
            while True:
                attempts = self.attempts(namespace, job_name, index)
                if attempts and attempts[-1].running:
                    return attempts[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"Job {job_name!r} index {index} not running after {timeout}s: {attempts}")
                self._ticked.wait(remaining)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testenv.kubelet", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True, help="pod folders and logs go here")
    parser.add_argument("--namespace-selector", help="only run Pods in namespaces with these labels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    kubelet = ProcessKubelet(args.kubeconfig, args.work_dir, args.namespace_selector)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    kubelet.start()
    logger.info("node %s registered; pods under %s", NODE_NAME, kubelet.work_dir / "pods")
    stopping.wait()
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
