"""Producers of document events, slowed down when the consumers fall behind.

Two clients with the same interface (``publish``, ``publish_many``, ``delete``) and the same
behaviour under backpressure:

- ``Producer`` appends to the Redis stream directly and throttles itself on the stream's backlog
  (queue.py: lag + pending of the pipeline's own consumer group, ``group``; other groups never
  count) with the same hysteresis as the gateway;
- ``GatewayClient`` posts to the HTTP ingest gateway and honours its ``429`` + ``Retry-After``.

Hysteresis (backpressure.py): producers are held once the backlog reaches the high watermark and
released once it has fallen to the low one. The watermarks are the operator's record of the stream
when there is one (the StreamPipeline's ``spec.backpressure``, and its Backpressure state), else
``high_watermark`` / ``low_watermark``. A held producer waits with exponential backoff (at least
Retry-After for the gateway) and, when ``timeout_s`` passes without being released, raises
``BackpressureError``. Both fill ``produced_at`` when an event lacks it.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from tributary_workers.contract import defaults
from tributary_workers.streaming.backpressure import BacklogMonitor, Hysteresis
from tributary_workers.streaming.events import Event, EventError, parse_event
from tributary_workers.streaming.queue import RedisStream, StreamNames

DEFAULT_HIGH_WATERMARK = defaults.HIGH_WATERMARK
DEFAULT_LOW_WATERMARK = defaults.LOW_WATERMARK


class BackpressureError(RuntimeError):
    """The consumers stayed too far behind for longer than the producer's timeout."""


class GatewayError(RuntimeError):
    """The gateway refused a request (not backpressure): invalid events, or it is unavailable."""

    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(f"gateway answered {status}: {message}")
        self.status = status
        self.body = body


def as_event(event: Event | dict[str, Any]) -> Event:
    return event if isinstance(event, Event) else parse_event(event)


@dataclass
class ProducerStats:
    published: int = 0
    throttled: int = 0  # times the producer was held back (429s for the gateway client)
    waited_s: float = 0.0


class _Backoff:
    def __init__(self, timeout_s: float, initial_s: float, max_s: float, what: str):
        self.started = time.monotonic()
        self.timeout_s = timeout_s
        self.delay = initial_s
        self.max_s = max_s
        self.what = what

    def wait(self, at_least: float = 0.0, detail: str = "") -> float:
        delay = max(self.delay, at_least)
        elapsed = time.monotonic() - self.started
        if elapsed + delay > self.timeout_s:
            raise BackpressureError(
                f"gave up after {elapsed:.1f}s (timeout {self.timeout_s:g}s): {self.what}{detail}"
            )
        time.sleep(delay)
        self.delay = min(self.delay * 2, self.max_s)
        return delay


# --- straight to Redis --------------------------------------------------------------------------


class Producer:
    """Appends events to an index's stream; holds back while the consumers are too far behind."""

    def __init__(self, redis_url: str, index: str, *, stream: str | None = None, group: str | None = None,
                 high_watermark: int = DEFAULT_HIGH_WATERMARK, low_watermark: int = DEFAULT_LOW_WATERMARK,
                 timeout_s: float = 60.0, chunk_size: int = 100, initial_backoff_s: float = 0.05,
                 max_backoff_s: float = 2.0, refresh_s: float = 0.1):
        self.index = index
        self.names = StreamNames.for_index(index, stream, group)
        self.stream = RedisStream.from_url(redis_url, self.names)
        self.monitor = BacklogMonitor(self.stream, high_watermark, low_watermark, refresh_s)
        self.timeout_s = timeout_s
        self.chunk_size = max(1, chunk_size)
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = ProducerStats()
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            self.stream.ensure_group()  # the stream and the group are created when missing
            self._ready = True

    def _wait_for_room(self) -> None:
        throttled, backlog = self.monitor.check()
        if not throttled:
            return
        backoff = _Backoff(self.timeout_s, self.initial_backoff_s, self.max_backoff_s,
                           f"the consumers of index {self.index!r} are behind")
        self.stats.throttled += 1
        while throttled:
            rule = self.monitor.rule
            reached = "reached" if backlog >= rule.high else f"is above {rule.low} since it reached"
            self.stats.waited_s += backoff.wait(
                detail=f" (backlog {backlog} {reached} the high watermark {rule.high}"
                       + (f" of StreamPipeline {rule.pipeline}" if rule.pipeline else "")
                       + f"; publishing resumes at {rule.low} or below)")
            throttled, backlog = self.monitor.check(force=True)

    def publish_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        """Validate (EventError on the first invalid one, nothing of that chunk is sent), stamp
        produced_at, and append in atomic chunks, waiting for room before each chunk."""
        self._ensure()
        ids: list[str] = []
        chunk: list[Event] = []
        for event in events:
            chunk.append(as_event(event))
            if len(chunk) >= self.chunk_size:
                ids += self._send(chunk)
                chunk = []
        if chunk:
            ids += self._send(chunk)
        return ids

    def _send(self, chunk: Sequence[Event]) -> list[str]:
        self._wait_for_room()
        now = time.time_ns()
        ids = self.stream.add_many([event.stamped(now).to_fields() for event in chunk])
        self.monitor.admitted(len(ids))
        self.stats.published += len(ids)
        return ids

    def publish(self, event: Event | dict[str, Any]) -> str:
        return self.publish_many([event])[0]

    def delete(self, doc_id: str, version: int) -> str:
        return self.publish({"op": "delete", "doc_id": doc_id, "version": version})

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- through the HTTP gateway -------------------------------------------------------------------


class GatewayClient:
    """Posts events to the ingest gateway; honours 429 + Retry-After with backoff up to timeout_s.

    A 503 (the gateway cannot reach Redis) and connection errors are retried the same way; any
    other refusal raises GatewayError with the gateway's reasons.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 60.0, request_timeout_s: float = 30.0,
                 initial_backoff_s: float = 0.1, max_backoff_s: float = 5.0, chunk_size: int = 100):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._parts = parts
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.chunk_size = max(1, chunk_size)
        self.stats = ProducerStats()
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._parts.hostname, self._parts.port, timeout=self.request_timeout_s)
        return self._conn

    def _request_once(self, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, str], Any]:
        conn = self._connection()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, self._parts.path.rstrip("/") + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        try:
            payload = json.loads(data) if data else None
        except json.JSONDecodeError:
            payload = data.decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        backoff = _Backoff(self.timeout_s, self.initial_backoff_s, self.max_backoff_s,
                           f"the gateway at {self.base_url} kept refusing")
        fresh_retry = True
        while True:
            reused = self._conn is not None
            try:
                status, headers, payload = self._request_once(method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                if reused and fresh_retry:  # a kept-alive connection the server had closed: reconnect now
                    fresh_retry = False
                    continue
                self.stats.waited_s += backoff.wait(detail=f" (last error: {exc})")
                continue
            if status < 300:
                return payload
            if status == 429:
                self.stats.throttled += 1
                retry_after = _retry_after(headers.get("retry-after"))
                detail = ""
                if isinstance(payload, dict) and "backlog" in payload:
                    detail = (f" with 429 (backlog {payload['backlog']} over the high watermark "
                              f"{payload.get('high_watermark')})")
                self.stats.waited_s += backoff.wait(at_least=retry_after, detail=detail)
                continue
            if status == 503:
                self.stats.waited_s += backoff.wait(detail=f" with 503: {_message(payload)}")
                continue
            raise GatewayError(status, _message(payload), payload)

    def publish_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        chunk: list[Event] = []
        for event in events:
            chunk.append(as_event(event))
            if len(chunk) >= self.chunk_size:
                ids += self._post(chunk)
                chunk = []
        if chunk:
            ids += self._post(chunk)
        return ids

    def _post(self, chunk: Sequence[Event]) -> list[str]:
        now = time.time_ns()
        body = ("[" + ",".join(event.stamped(now).to_json() for event in chunk) + "]").encode()
        payload = self._request("POST", "/v1/events", body)
        self.stats.published += len(chunk)
        return list(payload.get("ids", [])) if isinstance(payload, dict) else []

    def publish(self, event: Event | dict[str, Any]) -> str:
        ids = self.publish_many([event])
        return ids[0] if ids else ""

    def delete(self, doc_id: str, version: int) -> str:
        payload = self._request("DELETE", f"/v1/documents/{quote(doc_id, safe='')}?version={int(version)}")
        self.stats.published += 1
        ids = payload.get("ids", []) if isinstance(payload, dict) else []
        return ids[0] if ids else ""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0  # an HTTP date: rare from this gateway; one second is a fair floor


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        message = payload.get("error", "")
        errors = payload.get("errors")
        if errors:
            message += ": " + "; ".join(f"event {e.get('index')}: {e.get('reason')}" for e in errors[:5])
        return message or json.dumps(payload)[:300]
    return str(payload)[:300]


__all__ = ["BackpressureError", "BacklogMonitor", "EventError", "GatewayClient", "GatewayError", "Hysteresis",
           "Producer", "ProducerStats"]
