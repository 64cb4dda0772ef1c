"""Container entry point of a streaming worker: `tributary-stream-worker`, the command of a Deployment.

Every flag has an environment variable (TRIBUTARY_*), so a pod template can configure it either
way. Credentials never come as flags: the Milvus token is read from TRIBUTARY_MILVUS_TOKEN, and a
Redis password belongs in TRIBUTARY_REDIS_URL (from a Secret). The consumer name defaults to
POD_NAME (the Downward API), else {hostname}-{pid}.

SIGTERM drains: the worker stops reading, finishes and acknowledges its batch in flight, prints
its report as one JSON line on stdout and exits 0; if draining outlasts --drain-timeout it exits 1
(what was in flight is redelivered to another consumer). Exit 1 on a fatal error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .cli import EXIT_FATAL, EXIT_OK, index_name, positive_int
from .errors import one_line


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="tributary-stream-worker", description=__doc__.splitlines()[0])
    p.add_argument("--index", type=index_name, default=env("TRIBUTARY_INDEX"),
                   help="the index: names the stream and the routing record (env TRIBUTARY_INDEX)")
    p.add_argument("--collection", type=index_name, default=env("TRIBUTARY_COLLECTION"),
                   help="collection written without a routing record; default: the index (env TRIBUTARY_COLLECTION)")
    p.add_argument("--redis-url", default=env("TRIBUTARY_REDIS_URL"), help="env TRIBUTARY_REDIS_URL")
    p.add_argument("--milvus-uri", default=env("TRIBUTARY_MILVUS_URI"), help="env TRIBUTARY_MILVUS_URI")
    p.add_argument("--ledger", default=env("TRIBUTARY_LEDGER_URL"),
                   help="version ledger: redis://... or a SQLite path; default: the Redis URL "
                        "(env TRIBUTARY_LEDGER_URL)")
    p.add_argument("--stream", default=env("TRIBUTARY_STREAM"),
                   help="stream key; default tributary:stream:{index} (env TRIBUTARY_STREAM)")
    p.add_argument("--group", default=env("TRIBUTARY_GROUP"),
                   help="consumer group; default tributary (env TRIBUTARY_GROUP)")
    p.add_argument("--dead-letter-stream", default=env("TRIBUTARY_DEAD_LETTER_STREAM"),
                   help="default {stream}:dead (env TRIBUTARY_DEAD_LETTER_STREAM)")
    p.add_argument("--consumer", default=env("TRIBUTARY_CONSUMER") or env("POD_NAME"),
                   help="consumer name (env TRIBUTARY_CONSUMER, else POD_NAME, else {hostname}-{pid})")
    p.add_argument("--max-batch-size", type=positive_int, default=_int("TRIBUTARY_MAX_BATCH_SIZE", 32))
    p.add_argument("--max-wait-ms", type=int, default=_int("TRIBUTARY_MAX_WAIT_MS", 5),
                   help="how long a batch's first event waits for others (env TRIBUTARY_MAX_WAIT_MS)")
    p.add_argument("--claim-idle-ms", type=positive_int, default=_int("TRIBUTARY_CLAIM_IDLE_MS", 30_000),
                   help="claim other consumers' entries pending this long (env TRIBUTARY_CLAIM_IDLE_MS)")
    p.add_argument("--max-deliveries", type=positive_int, default=_int("TRIBUTARY_MAX_DELIVERIES", 5),
                   help="deliveries before an entry is dead-lettered (env TRIBUTARY_MAX_DELIVERIES)")
    p.add_argument("--retry-attempts", type=positive_int, default=_int("TRIBUTARY_RETRY_ATTEMPTS", 4))
    p.add_argument("--drain-timeout", type=float, default=_float("TRIBUTARY_DRAIN_TIMEOUT_S", 30.0),
                   help="seconds to finish the batch in flight after SIGTERM (env TRIBUTARY_DRAIN_TIMEOUT_S)")
    p.add_argument("--model", default=env("TRIBUTARY_MODEL"), help="local model path (env TRIBUTARY_MODEL)")
    p.add_argument("--embed-batch-size", type=positive_int, default=_int("TRIBUTARY_EMBED_BATCH_SIZE", 64))
    p.add_argument("--max-tokens", type=positive_int,
                   default=int(env("TRIBUTARY_MAX_TOKENS")) if env("TRIBUTARY_MAX_TOKENS") else None)
    p.add_argument("--overlap-tokens", type=int, default=_int("TRIBUTARY_OVERLAP_TOKENS", 32))
    p.add_argument("--replicas", type=positive_int, default=_int("TRIBUTARY_REPLICAS", 1))
    p.add_argument("--metric-type", default=env("TRIBUTARY_METRIC_TYPE", "COSINE"))
    p.add_argument("--index-type", default=env("TRIBUTARY_INDEX_TYPE", "AUTOINDEX"))
    p.add_argument("--metrics-port", type=int, default=_int("TRIBUTARY_METRICS_PORT", 0),
                   help="serve Prometheus /metrics on this port; 0 disables (env TRIBUTARY_METRICS_PORT)")
    return p


def config_from_args(args):
    from .chunker import ChunkerConfig
    from .stream import StreamConfig

    missing = [flag for flag, value in (("--index", args.index), ("--redis-url", args.redis_url),
                                        ("--milvus-uri", args.milvus_uri)) if not value]
    if missing:
        raise ValueError(f"missing required settings: {', '.join(missing)} (flags or TRIBUTARY_* env)")
    return StreamConfig(
        index=args.index, collection=args.collection, redis_url=args.redis_url, milvus_uri=args.milvus_uri,
        ledger_url=args.ledger, stream=args.stream, group=args.group, dead_letter_stream=args.dead_letter_stream,
        consumer=args.consumer, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        claim_idle_ms=args.claim_idle_ms, max_deliveries=args.max_deliveries, retry_attempts=args.retry_attempts,
        drain_timeout_s=args.drain_timeout, model=args.model, embed_batch_size=args.embed_batch_size,
        chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        replicas=args.replicas, metric_type=args.metric_type, index_type=args.index_type,
    )


def run_worker(config, metrics_port: int = 0) -> dict:
    """warm_up -> run until SIGTERM/SIGINT -> the report as a dict (shared with `tributary stream`)."""
    from . import metrics
    from .stream import StreamWorker, install_signal_handlers

    metrics.serve(metrics_port)
    worker = StreamWorker(config)
    try:
        install_signal_handlers(worker)
        worker.warm_up()
        logging.getLogger("tributary.stream").info(
            "consuming %s as %s/%s", config.names.stream, config.names.group, config.consumer)
        report = worker.run()
    finally:
        worker.close()
    return report.to_dict()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    try:
        report = run_worker(config_from_args(args), args.metrics_port)
    except Exception as exc:
        if os.environ.get("TRIBUTARY_DEBUG"):
            raise
        print(f"tributary-stream-worker: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FATAL
    print(json.dumps(report), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
