"""Process helpers shared by the local control plane and the process kubelet: start a binary that
dies with its parent, find a reused pid, poll, pick free ports, probe an HTTP endpoint."""

from __future__ import annotations

import ctypes
import os
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
from typing import Any

LOG_TAIL_CHARS = 4000


class ProcessError(RuntimeError):
    """A process could not be stopped."""


if sys.platform == "linux":
    _PR_SET_PDEATHSIG = 1
    _LIBC = ctypes.CDLL(None, use_errno=True)

    def die_with_parent() -> None:
        """Runs in the child before exec: the kernel sends it SIGTERM when the thread that started it
        exits, even when the test process is SIGKILLed and atexit never runs."""
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
else:
    die_with_parent = None


def pid_runs(pid: int, binary: str) -> bool:
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


def poll(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
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
        return pid_runs(self.pid, self.binary)

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
            if poll(lambda: not self.running(), timeout):
                return
        raise ProcessError(f"{self.name} (pid {self.pid}) is still running after SIGKILL")


def free_ports(count: int) -> list[int]:
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


def http_ok(url: str, expect: bytes, token: str | None = None) -> bool:
    """One probe: HTTP 200 with `expect` in the body. Any error only means 'not yet'."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with _PROBE.open(request, timeout=2) as response:
            return response.status == 200 and expect in response.read()
    except OSError:
        return False


