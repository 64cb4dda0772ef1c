"""Real server processes for integration tests: redis-server and a milvus-lite gRPC server.

Both start on free 127.0.0.1 ports once per test session. A missing binary is a test failure
with the command to fix it, never a skip: CI must not go green without the real components.
"""

from __future__ import annotations

import os
import uuid

import pytest
from tributary_workers.localservers import (  # re-exported for tests
    MilvusServer,
    MissingComponentError,
    RedisServer,
    free_port,
    start_milvus,
    start_redis,
    stop,
    wait_until_listening,
)

__all__ = ["MilvusServer", "RedisServer", "free_port", "stop", "wait_until_listening"]


def _start(starter, workdir):
    try:
        return starter(workdir)
    except MissingComponentError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> RedisServer:
    server = _start(start_redis, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> MilvusServer:
    server = _start(start_milvus, tmp_path_factory.mktemp("milvus"))
    yield server
    server.stop()


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
