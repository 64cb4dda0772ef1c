"""What every entry point shares: exit codes, argument types, env-backed flags, the fatal-error wrapper.

`tributary`, `tributary-batch-worker` and `tributary-stream-worker` all parse with these, so a flag
means the same in each and a fatal error is one line everywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.contract.exits import (  # noqa: F401  (re-exported for the commands)
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_PERMANENT,
)
from tributary_workers.errors import PermanentError, one_line

INDEX_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class FatalError(PermanentError):
    """Stops the command with a one-line message and exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse with a bad option reported in one line and exit status 1 (not argparse's 2)."""

    def error(self, message: str):
        self.exit(EXIT_FATAL, f"{self.prog}: error: {message}\n")


def index_name(value: str) -> str:
    if not INDEX_NAME.match(value):
        raise argparse.ArgumentTypeError(
            f"invalid index name {value!r}: use letters, digits and underscores, not starting with a digit"
        )
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return number


def from_env(name: str, default: Any = None, convert: Callable[[str], Any] = str) -> Any:
    """The value of an environment variable converted like its flag, or the default when unset/empty."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return convert(value)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise SystemExit(f"error: {name}={value!r}: {exc}") from None


def json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def env_list(name: str, separator: str = ",") -> list[str]:
    return [item for item in os.environ.get(name, "").split(separator) if item]


def add_chunking_options(parser: argparse.ArgumentParser, from_environment: bool = False) -> None:
    """--max-tokens / --overlap-tokens; a worker also reads them from TRIBUTARY_* variables."""
    max_tokens = from_env(ENV.MAX_TOKENS, None, positive_int) if from_environment else None
    overlap = from_env(ENV.OVERLAP_TOKENS, defaults.OVERLAP_TOKENS, int) if from_environment else defaults.OVERLAP_TOKENS
    parser.add_argument("--max-tokens", type=positive_int, default=max_tokens,
                        help=f"tokens per chunk (default: the model's limit; env {ENV.MAX_TOKENS})")
    parser.add_argument("--overlap-tokens", type=int, default=overlap,
                        help=f"tokens shared by neighbouring chunks (default {defaults.OVERLAP_TOKENS}; "
                             f"env {ENV.OVERLAP_TOKENS})")


def fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def add_prune_options(parser: argparse.ArgumentParser, from_environment: bool = False) -> None:
    """--prune / --prune-max-fraction: remove documents gone from the source, with a guard rail."""
    prune = from_env(ENV.PRUNE, "") == "true" if from_environment else False
    limit = (from_env(ENV.PRUNE_MAX_FRACTION, defaults.PRUNE_MAX_FRACTION, fraction) if from_environment
             else defaults.PRUNE_MAX_FRACTION)
    parser.add_argument("--prune", action="store_true", default=prune,
                        help="after a complete listing, remove documents this source wrote that it no longer "
                             f"lists (env {ENV.PRUNE}=true)")
    parser.add_argument("--prune-max-fraction", type=fraction, default=limit, metavar="F",
                        help=f"refuse to prune more than this share of the source's documents in one run "
                             f"(default {defaults.PRUNE_MAX_FRACTION}; env {ENV.PRUNE_MAX_FRACTION})")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend / --quantize: what runs the model (flags, else TRIBUTARY_BACKEND / TRIBUTARY_QUANTIZE)."""
    parser.add_argument("--backend", choices=defaults.BACKENDS, default=from_env(ENV.BACKEND, defaults.BACKEND),
                        help=f"what runs the model: onnx (ONNX Runtime, exported locally) or torch "
                             f"(default {defaults.BACKEND}; env {ENV.BACKEND})")
    parser.add_argument("--quantize", choices=defaults.QUANTIZATIONS,
                        default=from_env(ENV.QUANTIZE, defaults.QUANTIZE),
                        help=f"int8: dynamic int8 weights with --backend onnx; another encoder id, so its own "
                             f"collection (default {defaults.QUANTIZE}; env {ENV.QUANTIZE})")


def add_model_options(parser: argparse.ArgumentParser, embed_batch_size: int) -> None:
    """--model, --dimension, --embed-batch-size, --backend and --quantize of a worker, from flags or env."""
    add_backend_options(parser)
    parser.add_argument("--model", default=from_env(ENV.MODEL), help=f"local model path (env {ENV.MODEL})")
    parser.add_argument("--dimension", type=positive_int, default=from_env(ENV.DIMENSION, None, positive_int),
                        help=f"expected vector length; a model with another one is refused (env {ENV.DIMENSION})")
    parser.add_argument("--embed-batch-size", type=positive_int,
                        default=from_env(ENV.EMBED_BATCH_SIZE, embed_batch_size, positive_int),
                        help=f"chunks per model call (env {ENV.EMBED_BATCH_SIZE})")


def add_milvus_index_options(parser: argparse.ArgumentParser) -> None:
    """How a worker creates a missing collection (replicas, metric, index), from flags or env."""
    parser.add_argument("--replicas", type=positive_int, default=from_env(ENV.REPLICAS, defaults.REPLICAS, int),
                        help=f"in-memory replicas of a created collection (env {ENV.REPLICAS})")
    parser.add_argument("--metric-type", default=from_env(ENV.METRIC_TYPE, defaults.METRIC_TYPE),
                        help=f"metric of a created collection's index (env {ENV.METRIC_TYPE})")
    parser.add_argument("--index-type", default=from_env(ENV.INDEX_TYPE, defaults.INDEX_TYPE),
                        help=f"index type of a created collection (env {ENV.INDEX_TYPE})")
    parser.add_argument("--index-params", type=json_object, default=from_env(ENV.INDEX_PARAMS, {}, json_object),
                        help=f"index build parameters as a JSON object, e.g. '{{\"M\": 16}}' (env {ENV.INDEX_PARAMS})")
    parser.add_argument("--milvus-database", default=from_env(ENV.MILVUS_DATABASE),
                        help=f"Milvus database; the server's default when omitted (env {ENV.MILVUS_DATABASE})")
    parser.add_argument("--max-sequence-length", type=positive_int,
                        default=from_env(ENV.MAX_SEQUENCE_LENGTH, None, positive_int),
                        help=f"tokens the model reads per chunk, below its own limit (env {ENV.MAX_SEQUENCE_LENGTH})")
    parser.add_argument("--metrics-port", type=int,
                        default=from_env(ENV.METRICS_PORT, defaults.WORKER_METRICS_PORT, int),
                        help=f"serve Prometheus /metrics on this port; 0 disables (env {ENV.METRICS_PORT})")


def require(args: argparse.Namespace, *flags: str) -> None:
    """Settings a worker cannot run without, named as flags (each also has its TRIBUTARY_* variable)."""
    missing = [flag for flag in flags if not getattr(args, flag.lstrip("-").replace("-", "_"))]
    if missing:
        raise FatalError(f"missing required settings: {', '.join(missing)} (flags or TRIBUTARY_* env)")


def quiet_libraries() -> None:
    # pymilvus logs every failed RPC with a traceback; we report errors ourselves, in one line.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def worker_main(prog: str, build_parser: Callable[[], argparse.ArgumentParser],
                run: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """A container entry point: log lines with timestamps, flags (or env), then run_main; an error
    no retry can fix exits EXIT_PERMANENT, so the Job fails the shard instead of retrying it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    return run_main(prog, lambda: run(args), permanent_exit=EXIT_PERMANENT)


def run_main(prog: str, command: Callable[[], int], permanent_exit: int = EXIT_FATAL) -> int:
    """Run an entry point: a fatal error becomes one line on stderr and exit status 1.

    TRIBUTARY_DEBUG=1 lets the traceback through instead.
    """
    quiet_libraries()
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the one place a fatal error becomes one line
        if os.environ.get(ENV.DEBUG):
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return permanent_exit if isinstance(exc, PermanentError) else EXIT_FATAL
