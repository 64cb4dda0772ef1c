"""Start real local server processes (redis-server, `milvus-lite server`) on free ports.

Used by the test fixtures, the benchmarks and local development; production points the workers
at real services instead. A missing binary raises MissingComponentError with the fix.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class MissingComponentError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RedisServer:
    url: str
    port: int
    proc: subprocess.Popen

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class MilvusServer:
    uri: str
    port: int
    proc: subprocess.Popen
    data_dir: Path

    def stop(self) -> None:
        stop(self.proc)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    """redis-server on ``port`` (a free one when None: a restart on the old port is a Redis back)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise MissingComponentError("redis-server not found: run `make setup` (as root it apt-installs redis-server)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    log.touch()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    wait_until_listening(port, proc, log, timeout=20)
    return RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, proc=proc)


def start_milvus(workdir: Path, port: int | None = None) -> MilvusServer:
    """`milvus-lite server` on ``port`` (a free one when None)."""
    binary = Path(sys.executable).parent / "milvus-lite"
    if not binary.exists():
        raise MissingComponentError(f"{binary} not found: run `make setup` to install milvus-lite")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "milvus-data"
    log = workdir / "milvus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    wait_until_listening(port, proc, log, timeout=60)
    return MilvusServer(uri=f"http://127.0.0.1:{port}", port=port, proc=proc, data_dir=data_dir)
