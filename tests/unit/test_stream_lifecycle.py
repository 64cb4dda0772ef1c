"""Pure logic behind the streaming path's robustness: drain vs grace period, warm-up back-off,
transient Redis replies, the consumer name, Redis client timeouts, and the CLI defaults producers
and the gateway share with the StreamPipeline CRD."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis
from tributary_operator.api.v1alpha1.streampipeline_types import Backpressure, Batching, Retry
from tributary_workers.cli import commands, stream_worker
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.errors import PermanentError
from tributary_workers.ledger.connect import client_options, socket_timeout_for
from tributary_workers.streaming.config import StreamConfig, consumer_name, default_consumer_name
from tributary_workers.streaming.decisions import backoff_delay, transient_redis_reply, warm_up_expired
from tributary_workers.streaming.lifecycle import WATCHDOG_GRACE_S
from tributary_workers.streaming.warmup import Retrier, StoppedDuringWarmUp, WarmUpTimeout, redacted


# --- drain vs the pod's grace period ------------------------------------------------------------


@pytest.mark.parametrize(("grace", "drain"), [(35, 30.0), (60, 55.0), (6, 1.0), (5, 1.0), (0, 1.0), (30.5, 25.5)])
def test_drain_timeout_leaves_the_margin_of_the_grace_period(grace, drain):
    assert defaults.drain_timeout_for_grace(grace) == drain


def test_default_drain_fits_the_default_grace_period_with_the_watchdog():
    drain = defaults.drain_timeout_for_grace(defaults.TERMINATION_GRACE_PERIOD_S)
    assert drain == defaults.DRAIN_TIMEOUT_S
    assert drain + WATCHDOG_GRACE_S < defaults.TERMINATION_GRACE_PERIOD_S, "the watchdog exits before SIGKILL"
    assert WATCHDOG_GRACE_S < defaults.DRAIN_MARGIN_S


# --- warm-up and transient errors ---------------------------------------------------------------


def test_backoff_doubles_and_is_capped():
    assert [backoff_delay(n, 0.2, 5.0) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert backoff_delay(0, 0.2, 5.0) == 0.2


@pytest.mark.parametrize(("elapsed", "timeout", "expired"), [
    (0, 300, False), (299.9, 300, False), (300, 300, True), (10_000, 0, False),
])
def test_warm_up_expiry_and_zero_means_forever(elapsed, timeout, expired):
    assert warm_up_expired(elapsed, timeout) is expired


@pytest.mark.parametrize(("message", "error_class", "transient"), [
    ("READONLY You can't write against a read only replica.", "ResponseError", True),
    ("OOM command not allowed when used memory > 'maxmemory'.", "ResponseError", True),
    ("LOADING Redis is loading the dataset in memory", "ResponseError", True),
    ("BUSY Redis is busy running a script.", "ResponseError", True),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "ResponseError", True),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "ResponseError", True),
    ("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
     "ResponseError", True),
    # redis-py strips the code of the replies it maps to its own classes
    ("You can't write against a read only replica.", "ReadOnlyError", True),
    ("command not allowed when used memory > 'maxmemory'.", "OutOfMemoryError", True),
    ("BUSYGROUP Consumer Group name already exists", "ResponseError", False),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", "ResponseError", False),
    ("ERR syntax error", "ResponseError", False),
    ("NOGROUP No such key or consumer group", "ResponseError", False),
    ("OOMPH not a code", "ResponseError", False),
])
def test_transient_redis_replies(message, error_class, transient):
    assert transient_redis_reply(message, error_class) is transient


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@redis:6379/0", "redis://redis:6379/0"),
    ("rediss://user:pw@redis.example:6380", "rediss://redis.example:6380"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("http://milvus:19530", "http://milvus:19530"),
    ("/var/lib/ledger.sqlite", "/var/lib/ledger.sqlite"),
])
def test_urls_in_log_lines_carry_no_credentials(url, shown):
    assert redacted(url) == shown


def test_the_socket_timeout_always_exceeds_the_longest_block():
    for block_ms in (0, 500, 10_000, 60_000):
        assert socket_timeout_for(block_ms) > block_ms / 1000
    options = client_options(block_ms=StreamConfig.__dataclass_fields__["block_ms"].default)
    assert options["socket_timeout"] > 0.5 and options["socket_connect_timeout"] > 0
    assert options["health_check_interval"] > 0 and options["socket_keepalive"] is True


# --- the consumer name --------------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "expected"), [
    ({ENV.CONSUMER: "explicit", ENV.POD_NAME: "pod-7f9c"}, "explicit"),
    ({ENV.POD_NAME: "pod-7f9c"}, "pod-7f9c"),
    ({ENV.CONSUMER: "", ENV.POD_NAME: "pod-7f9c"}, "pod-7f9c"),
    ({}, "host-42"),
    ({ENV.POD_NAME: ""}, "host-42"),
    ({ENV.CONSUMER: "c" * 80}, "c" * 80),  # an explicit name is never cut
])
def test_consumer_name_order(environ, expected):
    assert consumer_name(environ, hostname="host", pid=42) == expected


def test_only_the_hostname_fallback_is_cut_to_63_characters_keeping_the_pid():
    name = default_consumer_name("h" * 100, 123456)
    assert len(name) == 63 and name.endswith("-123456") and name.startswith("h")
    assert default_consumer_name("short", 7) == "short-7"


def test_the_worker_entry_point_takes_the_consumer_in_that_order(monkeypatch):
    for name in [n for n in list(os.environ) if n.startswith("TRIBUTARY_") or n == ENV.POD_NAME]:
        monkeypatch.delenv(name)
    base = ["--index", "i", "--redis-url", "redis://r:6379/0", "--milvus-uri", "http://m:19530"]

    def consumer(*flags):
        return stream_worker.config_from_args(stream_worker.build_parser().parse_args([*base, *flags])).consumer

    assert consumer() == default_consumer_name()
    monkeypatch.setenv(ENV.POD_NAME, "tributary-stream-abc12")
    assert consumer() == "tributary-stream-abc12"
    monkeypatch.setenv(ENV.CONSUMER, "set-by-env")
    assert consumer() == "set-by-env"
    assert consumer("--consumer", "flag") == "flag"


def test_warm_up_timeout_and_drain_timeout_from_env(monkeypatch):
    for name in [n for n in list(os.environ) if n.startswith("TRIBUTARY_")]:
        monkeypatch.delenv(name)
    args = stream_worker.build_parser().parse_args([])
    assert (args.warm_up_timeout, args.drain_timeout) == (defaults.WARM_UP_TIMEOUT_S, defaults.DRAIN_TIMEOUT_S)
    monkeypatch.setenv(ENV.WARM_UP_TIMEOUT_S, "0")
    monkeypatch.setenv(ENV.DRAIN_TIMEOUT_S, "12.5")
    args = stream_worker.build_parser().parse_args([])
    assert (args.warm_up_timeout, args.drain_timeout) == (0.0, 12.5)
    with pytest.raises(SystemExit):
        stream_worker.build_parser().parse_args(["--warm-up-timeout", "-1"])


# --- CLI defaults that producers, the gateway and the CRD share ---------------------------------


def cli(*argv):
    return commands.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["gateway", "publish"])
def test_gateway_and_publish_watermarks_come_from_the_contract_like_the_crd(command):
    extra = ["events.jsonl"] if command == "publish" else []
    args = cli(command, *extra, "--index", "handbook")
    assert args.high_watermark == defaults.HIGH_WATERMARK == Backpressure.model_fields["high_watermark"].default
    assert args.low_watermark == defaults.LOW_WATERMARK == Backpressure.model_fields["low_watermark"].default
    assert (args.stream, args.group) == (None, None), "unset: tributary:stream:{index} and the contract's group"
    args = cli(command, *extra, "--index", "handbook", "--stream", "events:handbook", "--group", "pipeline-a")
    assert (args.stream, args.group) == ("events:handbook", "pipeline-a")


def test_claim_idle_and_batch_size_share_the_contract_constants_with_the_crd():
    assert Retry.model_fields["claim_idle_ms"].default == defaults.CLAIM_IDLE_MS
    assert StreamConfig.__dataclass_fields__["claim_idle_ms"].default == defaults.CLAIM_IDLE_MS
    assert Batching.model_fields["max_batch_size"].default == defaults.MAX_BATCH_SIZE
    assert StreamConfig.__dataclass_fields__["max_batch_size"].default == defaults.MAX_BATCH_SIZE
    assert StreamConfig.__dataclass_fields__["drain_timeout_s"].default == defaults.DRAIN_TIMEOUT_S


# --- the warm-up retrier (steps are plain functions; no server) ---------------------------------


def flaky(failures: list[BaseException], result="ready"):
    calls = []

    def step():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return step, calls


def test_warm_up_retries_outages_then_returns_the_steps_result(caplog):
    step, calls = flaky([ConnectionRefusedError(111, "refused"), redis.ConnectionError("reset"),
                         redis.ReadOnlyError("You can't write against a read only replica.")])
    with caplog.at_level("WARNING", logger="tributary.stream"):
        assert Retrier(10, 0.001, 0.002, threading.Event())("Redis at redis://r:6379/0", step) == "ready"
    assert len(calls) == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all(line.startswith("warm-up attempt ") for line in lines)
    assert "Redis at redis://r:6379/0 is not reachable" in lines[0]


@pytest.mark.parametrize("error", [
    PermanentError("model /m not found"), TypeError("a bug"),
    redis.AuthenticationError("invalid password"),
    redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
])
def test_warm_up_raises_what_no_retry_fixes_at_once(error):
    step, calls = flaky([error])
    with pytest.raises(type(error)):
        Retrier(10, 0.001, 0.002, threading.Event())("Redis", step)
    assert len(calls) == 1


def test_warm_up_gives_up_after_its_timeout():
    step, calls = flaky([OSError("down")] * 1000)
    with pytest.raises(WarmUpTimeout, match=r"^Milvus at http://m:19530 still unreachable after .*timeout 0.05s\): down"):
        Retrier(0.05, 0.01, 0.02, threading.Event())("Milvus at http://m:19530", step)
    assert len(calls) >= 2


def test_a_stop_ends_the_warm_up_wait_at_once():
    stop = threading.Event()
    step, calls = flaky([OSError("down")] * 1000)
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(StoppedDuringWarmUp):
        Retrier(0, 30.0, 30.0, stop)("Redis", step)  # 0: forever; a 30 s back-off
    assert time.monotonic() - started < 5 and len(calls) == 1
