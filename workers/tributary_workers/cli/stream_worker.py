"""Container entry point of a streaming worker: `tributary-stream-worker`, the command of a Deployment.

Every flag has an environment variable (TRIBUTARY_*, named in tributary_workers.contract.env), so
a pod template can configure it either way. Credentials never come as flags: the Milvus token is
read from TRIBUTARY_MILVUS_TOKEN, and a Redis password belongs in TRIBUTARY_REDIS_URL (from a
Secret). The consumer name defaults to POD_NAME (the Downward API), else {hostname}-{pid}.

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

from tributary_workers.cli.args import (
    EXIT_OK,
    Parser,
    add_chunking_options,
    add_milvus_index_options,
    add_model_options,
    from_env,
    index_name,
    non_negative_float,
    positive_int,
    require,
    worker_main,
)
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV

PROG = "tributary-stream-worker"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--index", type=index_name, default=from_env(ENV.INDEX),
                   help=f"the index: names the stream and the routing record (env {ENV.INDEX})")
    p.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION),
                   help=f"collection written without a routing record; default: the index (env {ENV.COLLECTION})")
    p.add_argument("--redis-url", default=from_env(ENV.REDIS_URL), help=f"env {ENV.REDIS_URL}")
    p.add_argument("--milvus-uri", default=from_env(ENV.MILVUS_URI), help=f"env {ENV.MILVUS_URI}")
    p.add_argument("--ledger", default=from_env(ENV.LEDGER_URL),
                   help=f"version ledger: redis://... or a SQLite path; default: the Redis URL (env {ENV.LEDGER_URL})")
    p.add_argument("--stream", default=from_env(ENV.STREAM),
                   help=f"stream key; default tributary:stream:{{index}} (env {ENV.STREAM})")
    p.add_argument("--group", default=from_env(ENV.GROUP),
                   help=f"consumer group; default {defaults.CONSUMER_GROUP} (env {ENV.GROUP})")
    p.add_argument("--dead-letter-stream", default=from_env(ENV.DEAD_LETTER_STREAM),
                   help=f"default {{stream}}:dead (env {ENV.DEAD_LETTER_STREAM})")
    p.add_argument("--consumer",
                   help=f"consumer name (env {ENV.CONSUMER}, else {ENV.POD_NAME}, else {{hostname}}-{{pid}}, "
                        "cut to 63 characters)")
    add_stream_tuning_options(p, from_environment=True)
    add_model_options(p, embed_batch_size=defaults.STREAM_EMBED_BATCH_SIZE)
    add_chunking_options(p, from_environment=True)
    add_milvus_index_options(p)
    return p


def add_stream_tuning_options(p: argparse.ArgumentParser, from_environment: bool) -> None:
    """Batching, claiming, dead-lettering and drain: shared by `tributary stream` and the container."""
    def default(name: str, value, convert):
        return from_env(name, value, convert) if from_environment else value

    p.add_argument("--max-batch-size", type=positive_int,
                   default=default(ENV.MAX_BATCH_SIZE, defaults.MAX_BATCH_SIZE, positive_int),
                   help=f"events per batch (env {ENV.MAX_BATCH_SIZE})")
    p.add_argument("--max-wait-ms", type=int, default=default(ENV.MAX_WAIT_MS, defaults.MAX_WAIT_MS, int),
                   help=f"how long a batch's first event waits for others to join it (env {ENV.MAX_WAIT_MS})")
    p.add_argument("--claim-idle-ms", type=positive_int,
                   default=default(ENV.CLAIM_IDLE_MS, defaults.CLAIM_IDLE_MS, positive_int),
                   help=f"claim other consumers' entries pending this long (env {ENV.CLAIM_IDLE_MS})")
    p.add_argument("--max-deliveries", type=positive_int,
                   default=default(ENV.MAX_DELIVERIES, defaults.MAX_DELIVERIES, positive_int),
                   help=f"deliveries before an event goes to the dead-letter stream (env {ENV.MAX_DELIVERIES})")
    p.add_argument("--retry-attempts", type=positive_int,
                   default=default(ENV.RETRY_ATTEMPTS, defaults.RETRY_ATTEMPTS, positive_int),
                   help=f"attempts of a batch on a transient error (env {ENV.RETRY_ATTEMPTS})")
    p.add_argument("--drain-timeout", type=non_negative_float,
                   default=default(ENV.DRAIN_TIMEOUT_S, defaults.DRAIN_TIMEOUT_S, non_negative_float),
                   help=f"seconds to finish the batch in flight after SIGTERM; keep it "
                        f"{defaults.DRAIN_MARGIN_S:g}s below the pod's grace period (env {ENV.DRAIN_TIMEOUT_S})")
    p.add_argument("--warm-up-timeout", type=non_negative_float,
                   default=default(ENV.WARM_UP_TIMEOUT_S, defaults.WARM_UP_TIMEOUT_S, non_negative_float),
                   help=f"seconds to keep retrying an unreachable Redis or Milvus at start; 0: forever "
                        f"(env {ENV.WARM_UP_TIMEOUT_S})")


def config_from_args(args):
    from tributary_workers.pipeline.chunker import ChunkerConfig
    from tributary_workers.streaming.config import StreamConfig, consumer_name

    require(args, "--index", "--redis-url", "--milvus-uri")
    return StreamConfig(
        index=args.index, collection=args.collection, redis_url=args.redis_url, milvus_uri=args.milvus_uri,
        ledger_url=args.ledger, stream=args.stream, group=args.group, dead_letter_stream=args.dead_letter_stream,
        consumer=args.consumer or consumer_name(os.environ), max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        claim_idle_ms=args.claim_idle_ms, max_deliveries=args.max_deliveries, retry_attempts=args.retry_attempts,
        drain_timeout_s=args.drain_timeout, warm_up_timeout_s=args.warm_up_timeout, model=args.model, dimension=args.dimension,
        backend=args.backend, quantize=args.quantize,
        embed_batch_size=args.embed_batch_size,
        chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        replicas=args.replicas, metric_type=args.metric_type, index_type=args.index_type,
        index_params=args.index_params, db_name=args.milvus_database, max_seq_length=args.max_sequence_length,
    )


def run_worker(config, metrics_port: int = 0) -> dict:
    """warm_up -> run until SIGTERM/SIGINT -> the report as a dict (shared with `tributary stream`)."""
    from tributary_workers import metrics
    from tributary_workers.streaming.lifecycle import install_signal_handlers
    from tributary_workers.streaming.worker import StoppedDuringWarmUp, StreamWorker

    log = logging.getLogger("tributary.stream")
    metrics.serve(metrics_port)
    worker = StreamWorker(config)
    try:
        install_signal_handlers(worker)
        try:
            worker.warm_up()
        except StoppedDuringWarmUp as exc:  # nothing was read: a clean, drained exit
            log.info("%s", exc)
            worker.report.drained = True
            return worker.report.to_dict()
        log.info("consuming %s as %s/%s", config.names.stream, config.names.group, config.consumer)
        report = worker.run()
    finally:
        worker.close()
    return report.to_dict()


def _run(args) -> int:
    report = run_worker(config_from_args(args), args.metrics_port)
    print(json.dumps(report), flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return worker_main(PROG, build_parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
