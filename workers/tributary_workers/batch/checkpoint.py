"""Where a batch shard stands, so a restarted worker resumes instead of starting over.

Refs are processed in sorted doc_id order with bounded concurrency, so they finish slightly out
of order. The checkpoint is a low watermark (every ref at or below it is done) plus the few done
refs above it, and the report counters for everything they cover. Resuming skips exactly those
refs; anything done after the last save is redone cheaply, because the version ledger recognises
this run's own commits (no re-embedding, still counted as succeeded).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from tributary_workers.contract import keys
from tributary_workers.contract.checkpoints import CheckpointState


class WatermarkTracker:
    """Turns out-of-order completions of an ordered list into a watermark."""

    def __init__(self, state: CheckpointState):
        self.state = state
        self._pending: list[str] = []  # refs handed out, not yet done, in order
        self._done: set[str] = set(state.done_above)

    def started(self, doc_id: str) -> None:
        self._pending.append(doc_id)

    def finished(self, doc_id: str) -> None:
        self.state.sources_done += 1
        self._done.add(doc_id)
        while self._pending and self._pending[0] in self._done:
            head = self._pending.pop(0)
            self._done.discard(head)
            self.state.watermark = head
        self.state.done_above = sorted(self._done)


class CheckpointStore(Protocol):
    def load(self, key: str) -> CheckpointState | None: ...

    def save(self, key: str, state: CheckpointState) -> None: ...

    def close(self) -> None: ...


class SQLiteCheckpointStore:
    def __init__(self, path: str | Path):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, state TEXT NOT NULL)")

    def load(self, key: str) -> CheckpointState | None:
        with self._lock:
            row = self._conn.execute("SELECT state FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return CheckpointState.from_json(row[0]) if row else None

    def save(self, key: str, state: CheckpointState) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", (key, state.to_json()))

    def close(self) -> None:
        self._conn.close()


class RedisCheckpointStore:
    def __init__(self, client):
        self.client = client

    def load(self, key: str) -> CheckpointState | None:
        raw = self.client.get(keys.redis_checkpoint_key(key))
        return CheckpointState.from_json(raw) if raw else None

    def save(self, key: str, state: CheckpointState) -> None:
        self.client.set(keys.redis_checkpoint_key(key), state.to_json())

    def close(self) -> None:
        self.client.close()


class ConfigMapCheckpointStore:
    """Checkpoints in a ConfigMap (one key per shard) that the operator owns and reads for progress.

    The Kubernetes API is no database: saves are throttled to one per ``min_interval_s`` (the
    final, completed state is always written). Work done after the last save is recognised by the
    version ledger on resume, so throttling costs no re-embedding.
    """

    def __init__(self, namespace: str, name: str, min_interval_s: float = 2.0):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.api = client.CoreV1Api()
        self.namespace = namespace
        self.name = name
        self.min_interval_s = min_interval_s
        self._last_save = 0.0

    data_key = staticmethod(keys.configmap_data_key)

    def load(self, key: str) -> CheckpointState | None:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        raw = (cm.data or {}).get(self.data_key(key))
        return CheckpointState.from_json(raw) if raw else None

    def save(self, key: str, state: CheckpointState) -> None:
        from kubernetes.client.exceptions import ApiException

        now = time.monotonic()
        if not state.completed and now - self._last_save < self.min_interval_s:
            return
        body = {"data": {self.data_key(key): state.to_json()}}
        try:
            self.api.patch_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.api.create_namespaced_config_map(
                self.namespace, {"metadata": {"name": self.name}, **body})
        self._last_save = now

    def close(self) -> None:
        self.api.api_client.close()


def open_checkpoint_store(url: str) -> CheckpointStore:
    """``redis://...`` -> Redis; ``configmap://NAMESPACE/NAME`` -> ConfigMap; else a SQLite path."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tributary_workers.ledger.connect import redis_client

        return RedisCheckpointStore(redis_client(url))  # bounded waits: an outage is an error, not a hang
    if url.startswith("configmap://"):
        namespace, _, name = url.removeprefix("configmap://").partition("/")
        if not namespace or not name:
            raise ValueError(f"checkpoint URL {url!r} is not configmap://NAMESPACE/NAME")
        return ConfigMapCheckpointStore(namespace, name)
    return SQLiteCheckpointStore(url.removeprefix("sqlite://"))
