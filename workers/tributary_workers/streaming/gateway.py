"""The HTTP ingest gateway (aiohttp): producers post document events, the gateway validates them,
stamps ``produced_at`` and appends them to the index's Redis stream, and slows producers down with
``429 Too Many Requests`` + ``Retry-After`` while the consumers are behind.

    POST   /v1/events                      one event (a JSON object) or a JSON array of events
                                           202 {"accepted": n, "ids": [...]}
                                           400 {"error": ..., "errors": [{"index": i, "reason": ...}]}
                                               (an array is all or nothing: one invalid event, none queued)
                                           413 more than max_events_per_request events
                                           429 {"error": "backpressure", "backlog": n, ...} + Retry-After
    DELETE /v1/documents/{doc_id}?version=N  a delete event for the (URL-encoded) doc_id; 202 / 400 / 429
    GET    /healthz                        200 while the process serves
    GET    /readyz                         200 when Redis answers, else 503
    GET    /metrics                        Prometheus metrics

Backpressure: backlog = lag + pending of the pipeline's own consumer group (queue.py; an abandoned
group never throttles), measured at most every backlog_refresh_s; 429 from backlog >= the high
watermark until it has fallen to the low one (hysteresis). The watermarks, and the pipeline's
Backpressure state, are the operator's record of the stream when there is one (backpressure.py),
else high_watermark / low_watermark. Events that fail validation are refused with their reasons (the
producer learns at once); only entries that reach the stream invalid (written by other means)
are dead-lettered by the worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from tributary_workers.streaming.backpressure import OPERATOR, BacklogMonitor
from tributary_workers.streaming.events import EventError, parse_event
from tributary_workers.streaming.producer import DEFAULT_HIGH_WATERMARK, DEFAULT_LOW_WATERMARK
from tributary_workers.streaming.queue import RedisStream, StreamNames

log = logging.getLogger("tributary.gateway")

REQUESTS = Counter("tributary_gateway_requests_total", "Gateway requests, by route and status", ["route", "status"])
EVENTS = Counter("tributary_gateway_events_total", "Events received, by result (accepted, invalid, throttled)",
                 ["result"])
BACKLOG = Gauge("tributary_gateway_backlog", "Backlog (lag + pending) last measured by the gateway")
THROTTLED = Gauge("tributary_gateway_throttled", "1 while producers are answered 429")
WATERMARK = Gauge("tributary_gateway_watermark", "The watermarks in force, by bound (high, low)", ["bound"])
FROM_OPERATOR = Gauge("tributary_gateway_watermarks_from_operator",
                      "1 while the operator's backpressure record is in force, 0 while the flags are")


@dataclass
class GatewayConfig:
    index: str
    redis_url: str
    stream: str | None = None
    group: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    high_watermark: int = DEFAULT_HIGH_WATERMARK
    low_watermark: int = DEFAULT_LOW_WATERMARK
    retry_after_s: float = 1.0
    backlog_refresh_s: float = 0.1
    max_events_per_request: int = 1000
    max_body_bytes: int = 64 * 1024 * 1024

    @property
    def names(self) -> StreamNames:
        return StreamNames.for_index(self.index, self.stream, self.group)


class Gateway:
    """The request handlers; Redis calls run on a small thread pool (redis-py is blocking)."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.stream = RedisStream.from_url(config.redis_url, config.names)
        self.monitor = BacklogMonitor(self.stream, config.high_watermark, config.low_watermark,
                                      config.backlog_refresh_s)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gateway-redis")
        self._group_ready = False

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._count])
        app.router.add_post("/v1/events", self.post_events)
        app.router.add_delete("/v1/documents/{doc_id:.+}", self.delete_document)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler):
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            REQUESTS.labels(route, str(exc.status)).inc()
            raise
        REQUESTS.labels(route, str(response.status)).inc()
        return response

    async def _startup(self, app: web.Application) -> None:
        try:
            await self._ensure_group()
        except Exception as exc:  # not fatal: /readyz says so, and requests try again
            log.warning("cannot create the stream's consumer group yet: %s", exc)

    async def _cleanup(self, app: web.Application) -> None:
        self._pool.shutdown(wait=False)
        self.stream.close()

    async def _ensure_group(self) -> None:
        if not self._group_ready:
            await self._call(self.stream.ensure_group)  # the stream and group are created when missing
            self._group_ready = True

    # -- handlers --------------------------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _json(400, {"error": f"the body is not JSON: {exc}"})
        items = data if isinstance(data, list) else [data]
        if not items:
            return _json(400, {"error": "an empty array holds no event"})
        if len(items) > self.config.max_events_per_request:
            return _json(413, {"error": f"{len(items)} events in one request; at most "
                                        f"{self.config.max_events_per_request}"})
        events, errors = [], []
        for position, item in enumerate(items):
            try:
                events.append(parse_event(item))
            except EventError as exc:
                errors.append({"index": position, "reason": str(exc)})
        if errors:
            EVENTS.labels("invalid").inc(len(errors))
            return _json(400, {"error": f"{len(errors)} of {len(items)} events are invalid; none was queued",
                               "errors": errors})
        return await self._enqueue(events)

    async def delete_document(self, request: web.Request) -> web.Response:
        raw_version = request.query.get("version")
        if raw_version is None or not raw_version.lstrip("-").isdigit():
            return _json(400, {"error": "query parameter version=N (an integer) is required"})
        try:
            event = parse_event({"op": "delete", "doc_id": request.match_info["doc_id"], "version": int(raw_version)})
        except EventError as exc:
            EVENTS.labels("invalid").inc()
            return _json(400, {"error": "invalid delete", "errors": [{"index": 0, "reason": str(exc)}]})
        return await self._enqueue([event])

    async def _enqueue(self, events) -> web.Response:
        cfg = self.config
        try:
            await self._ensure_group()
            throttled, backlog = await self._call(self.monitor.check)
        except Exception as exc:
            return _json(503, {"error": f"the queue is unavailable: {exc}"})
        rule = self.monitor.rule
        BACKLOG.set(backlog)
        THROTTLED.set(1 if throttled else 0)
        WATERMARK.labels("high").set(rule.high)
        WATERMARK.labels("low").set(rule.low)
        FROM_OPERATOR.set(1 if rule.source == OPERATOR else 0)
        if throttled:
            EVENTS.labels("throttled").inc(len(events))
            retry_after = max(1, math.ceil(cfg.retry_after_s))
            return _json(429, {"error": "backpressure", "backlog": backlog, "high_watermark": rule.high,
                               "low_watermark": rule.low, "source": rule.source, "retry_after_s": retry_after},
                         headers={"Retry-After": str(retry_after)})
        now = time.time_ns()
        try:
            ids = await self._call(self.stream.add_many, [event.stamped(now).to_fields() for event in events])
        except Exception as exc:
            return _json(503, {"error": f"the queue is unavailable: {exc}"})
        self.monitor.admitted(len(ids))
        EVENTS.labels("accepted").inc(len(ids))
        return _json(202, {"accepted": len(ids), "ids": ids})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            await self._call(self.stream.client.ping)
            await self._ensure_group()
        except Exception as exc:
            return _json(503, {"status": "unavailable", "error": str(exc)})
        return _json(200, {"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def create_app(config: GatewayConfig) -> web.Application:
    return Gateway(config).app()


def run_gateway(config: GatewayConfig) -> None:
    """Serve until SIGTERM/SIGINT (aiohttp's graceful shutdown)."""
    log.info("gateway for index %s on http://%s:%d (stream %s)", config.index, config.host, config.port,
             config.names.stream)
    web.run_app(create_app(config), host=config.host, port=config.port, print=None, shutdown_timeout=10)


class GatewayServer:
    """The gateway on a background thread with its own event loop (tests, benchmarks, embedding)."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> GatewayServer:
        self._thread = threading.Thread(target=self._serve, name="gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(create_app(self.config), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.config.host, self.config.port)
            self._loop.run_until_complete(site.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
