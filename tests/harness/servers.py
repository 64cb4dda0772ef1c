"""Real server processes for integration tests: redis-server and a milvus-lite gRPC server.

Both start on free 127.0.0.1 ports once per test session. A missing binary is a test error
with the command to fix it, never a skip: CI must not go green without the real components.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


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


@dataclass
class MilvusServer:
    uri: str
    port: int
    proc: subprocess.Popen
    data_dir: Path


def start_redis(workdir: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: run `make setup` (as root it apt-installs redis-server)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    log.touch()
    wait_until_listening(port, proc, log, timeout=20)
    return RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, proc=proc)


def start_milvus(workdir: Path) -> MilvusServer:
    binary = VENV_BIN / "milvus-lite"
    if not binary.exists():
        pytest.fail(f"{binary} not found: run `make setup` to install milvus-lite")
    port = free_port()
    data_dir = workdir / "milvus-data"
    log = workdir / "milvus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    wait_until_listening(port, proc, log, timeout=60)
    return MilvusServer(uri=f"http://127.0.0.1:{port}", port=port, proc=proc, data_dir=data_dir)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> MilvusServer:
    server = start_milvus(tmp_path_factory.mktemp("milvus"))
    yield server
    stop(server.proc)


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def collection_name() -> str:
    """A fresh collection per test, so tests sharing the session's Milvus server never collide."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def worker_env(tmp_path) -> dict[str, str]:
    """Environment for worker subprocesses: offline model loading, isolated state directory."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRIBUTARY_HOME=str(tmp_path / "home"))
    return env
