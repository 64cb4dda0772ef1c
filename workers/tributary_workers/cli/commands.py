"""`tributary`: the local mode (embedded Milvus Lite, SQLite ledger), streaming commands and helpers.

Exit status: 0 when every document succeeded, 3 when some documents failed (the others are
written), 1 on a fatal error, printed as one line without a traceback (TRIBUTARY_DEBUG=1 shows it).
The operator is its own command, `tributary-operator`: the data plane never imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tributary_workers.cli.args import (
    EXIT_OK,
    EXIT_PARTIAL,
    FatalError,
    Parser,
    add_backend_options,
    add_chunking_options,
    add_prune_options,
    from_env,
    index_name,
    positive_int,
    run_main,
)
from tributary_workers.cli.costs import COST_COMMANDS, add_cost_commands
from tributary_workers.cli.drift import DRIFT_COMMANDS, add_drift_command
from tributary_workers.cli.stream_worker import add_stream_tuning_options
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tributary", description="Document ingestion for retrieval on Milvus.")
    parser.add_argument("--milvus", metavar="URI",
                        help="Milvus URI: a Milvus Lite file, or http://host:19530 for a server "
                             "(default: an embedded Milvus Lite file in the state directory)")
    parser.add_argument("--home", metavar="DIR", type=Path,
                        default=Path(from_env(ENV.HOME, ".tributary")),
                        help="state directory for the embedded database, ledger and checkpoints "
                             "(env TRIBUTARY_HOME, default ./.tributary)")
    parser.add_argument("--model", metavar="PATH",
                        help="a local sentence-transformers model (default: bundled all-MiniLM-L6-v2)")
    add_backend_options(parser)
    parser.add_argument("--redis", metavar="URL",
                        default=from_env(ENV.REDIS_URL, "redis://localhost:6379/0"),
                        help="Redis of the event streams (env TRIBUTARY_REDIS_URL, default redis://localhost:6379/0)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="batch-ingest a source into an index")
    ingest.add_argument("source", nargs="+", metavar="SOURCE",
                        help="a directory, a glob, s3://bucket/prefix, or one or more http(s) URLs")
    ingest.add_argument("--index", required=True, type=index_name, help="the index (collection) name")
    ingest.add_argument("--include", action="append", default=[], metavar="GLOB", help="only these doc ids")
    ingest.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip these doc ids")
    ingest.add_argument("--max-concurrency", type=positive_int, default=defaults.MAX_CONCURRENCY,
                        help="documents loaded at once")
    ingest.add_argument("--embed-batch-size", type=positive_int, default=defaults.BATCH_EMBED_BATCH_SIZE,
                        help="chunks per model call")
    add_chunking_options(ingest)
    ingest.add_argument("--bulk-load", action="store_true",
                        help="initial load into a new, empty collection: build the index and load at the end")
    add_prune_options(ingest)
    ingest.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")

    query = commands.add_parser("query", help="search an index")
    query.add_argument("text", metavar="TEXT")
    query.add_argument("--index", required=True, type=index_name)
    query.add_argument("-k", type=positive_int, default=5, help="number of hits")
    query.add_argument("--json", action="store_true", help="print hits as a JSON list on stdout")

    commands.add_parser("demo", help="the embedded showcase: ingest, update, delete, query")
    add_streaming_commands(commands)
    add_cost_commands(commands)
    add_drift_command(commands)
    return parser


def add_streaming_commands(commands) -> None:
    stream = commands.add_parser("stream", help="run a streaming worker on an index's event stream (until Ctrl-C)")
    stream.add_argument("--index", required=True, type=index_name, help="the index (collection) name")
    stream.add_argument("--ledger", metavar="LEDGER", default="local",
                        help="version ledger: 'local' (default: the SQLite ledger under --home, the one "
                             "`tributary ingest` uses), 'redis' (on --redis, shared with cluster workers), "
                             "or a redis:// URL or SQLite path")
    add_stream_names_options(stream, "to consume")
    stream.add_argument("--consumer", help="consumer name in the group (default: {hostname}-{pid})")
    add_stream_tuning_options(stream, from_environment=False)
    add_chunking_options(stream)
    stream.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port")
    stream.add_argument("--json", action="store_true", help="print the final report as one JSON object")

    publish = commands.add_parser("publish", help="publish document events from a JSONL file ('-': stdin)")
    publish.add_argument("file", metavar="FILE", help="one event a line, as in docs/events.schema.json")
    publish.add_argument("--index", required=True, type=index_name, help="the index (collection) name")
    publish.add_argument("--gateway", metavar="URL", help="post through the HTTP gateway instead of Redis")
    add_stream_names_options(publish, "straight to Redis; the gateway has its own")
    publish.add_argument("--timeout", type=float, default=300.0,
                         help="seconds to wait for the consumers to catch up before giving up")
    publish.add_argument("--high-watermark", type=positive_int, default=defaults.HIGH_WATERMARK,
                         help="backlog at which publishing pauses (straight to Redis; the operator's "
                              "record of the stream wins when there is one)")
    publish.add_argument("--low-watermark", type=int, default=defaults.LOW_WATERMARK,
                         help="backlog at or below which publishing resumes (straight to Redis; likewise)")

    gateway = commands.add_parser("gateway", help="run the HTTP ingest gateway of an index")
    gateway.add_argument("--index", required=True, type=index_name, help="the index (collection) name")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on")
    gateway.add_argument("--port", type=int, default=8080, help="port to listen on")
    add_stream_names_options(gateway, "whose backlog throttles producers")
    gateway.add_argument("--high-watermark", type=positive_int, default=defaults.HIGH_WATERMARK,
                         help="backlog at which producers get 429 (the operator's record of the stream "
                              "wins when there is one)")
    gateway.add_argument("--low-watermark", type=int, default=defaults.LOW_WATERMARK,
                         help="backlog at which 429s stop")
    gateway.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds of a 429")


def add_stream_names_options(parser, what: str) -> None:
    """--stream / --group, as the stream worker has them (same defaults, from the contract)."""
    parser.add_argument("--stream", help=f"stream key ({what}); default tributary:stream:{{index}}")
    parser.add_argument("--group", help=f"the pipeline's consumer group; default {defaults.CONSUMER_GROUP}")


def milvus_uri(args) -> str:
    return args.milvus or str(args.home / "milvus.db")


def _ingest(args) -> int:
    from tributary_workers.batch.worker import BatchConfig, BatchWorker
    from tributary_workers.cli.progress import ProgressBar
    from tributary_workers.pipeline.chunker import ChunkerConfig

    args.home.mkdir(parents=True, exist_ok=True)
    config = BatchConfig(
        source=args.source if len(args.source) > 1 else args.source[0],
        collection=args.index,
        milvus_uri=milvus_uri(args),
        ledger_url=str(args.home / "ledger.sqlite"),
        checkpoint_url=str(args.home / "checkpoints.sqlite"),
        include=args.include,
        exclude=args.exclude,
        max_concurrency=args.max_concurrency,
        embed_batch_size=args.embed_batch_size,
        model=args.model, backend=args.backend, quantize=args.quantize,
        chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        bulk_load=args.bulk_load,
        prune=args.prune,
        prune_max_fraction=args.prune_max_fraction,
    )
    with ProgressBar(enabled=sys.stderr.isatty() or not args.json) as progress:
        worker = BatchWorker(config, on_progress=progress.update)
        try:
            worker.warm_up()
            report = worker.run()
        finally:
            worker.close()
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print_report(report)
    return report.exit_code


def print_report(report) -> None:
    print(
        f"{report.documents_total} documents: {report.documents_succeeded} succeeded, "
        f"{report.documents_unchanged} unchanged, {report.documents_failed} failed; "
        f"{report.chunks_written} chunks written in {report.duration_s:.1f}s "
        f"({report.chunks_per_second:.1f} chunks/s)"
    )
    if report.prune_message:
        print(report.prune_message)
    for failure in report.failures:
        print(f"  failed: {failure['doc_id']}: {failure['reason']}")


def open_searcher(args, index: str):
    from tributary_workers.pipeline.search import Searcher

    searcher = Searcher(milvus_uri(args), index, model=args.model, backend=args.backend,
                        quantize=args.quantize)
    searcher.warm_up()
    return searcher


def _query(args) -> int:
    searcher = open_searcher(args, args.index)
    try:
        hits = searcher.run(args.text, args.k)
    finally:
        searcher.close()
    if args.json:
        print(json.dumps([
            {"doc_id": h.doc_id, "chunk_index": h.chunk_index, "score": round(h.score, 6), "text": h.text}
            for h in hits
        ]))
    else:
        for rank, hit in enumerate(hits, 1):
            snippet = " ".join(hit.text.split())[:100]
            print(f"{rank}. {hit.score:.3f}  {hit.doc_id}#{hit.chunk_index}  {snippet}")
    return EXIT_OK


def _demo(args) -> int:
    from tributary_workers.cli.demo import run_demo

    return run_demo(args.home, milvus_uri(args), args.model)




def _stream(args) -> int:
    from tributary_workers.cli.stream_worker import run_worker
    from tributary_workers.pipeline.chunker import ChunkerConfig
    from tributary_workers.streaming.config import StreamConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.home.mkdir(parents=True, exist_ok=True)
    ledger = {"local": str(args.home / "ledger.sqlite"), "redis": args.redis}.get(args.ledger, args.ledger)
    config = StreamConfig(
        index=args.index, redis_url=args.redis, milvus_uri=milvus_uri(args), ledger_url=ledger,
        stream=args.stream, group=args.group, consumer=args.consumer, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        claim_idle_ms=args.claim_idle_ms, max_deliveries=args.max_deliveries, retry_attempts=args.retry_attempts,
        drain_timeout_s=args.drain_timeout, warm_up_timeout_s=args.warm_up_timeout,
        model=args.model, chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        backend=args.backend, quantize=args.quantize,
    )
    report = run_worker(config, args.metrics_port)
    if args.json:
        print(json.dumps(report))
    else:
        events = ", ".join(f"{count} {result}" for result, count in report["events"].items()) or "no events"
        mean = report["latency_mean_s"]
        print(f"stopped after {report['batches']} batches: {events}"
              + (f"; mean latency {mean * 1000:.0f} ms" if mean is not None else ""))
    return EXIT_OK


def _publish(args) -> int:
    from tributary_workers.streaming.events import EventError, parse_event_json
    from tributary_workers.streaming.producer import GatewayClient, Producer

    if args.gateway:
        if args.stream or args.group:
            raise FatalError("--stream and --group go straight to Redis; with --gateway, the gateway's own apply")
        client = GatewayClient(args.gateway, timeout_s=args.timeout)
    else:
        if not 0 <= args.low_watermark < args.high_watermark:
            raise FatalError("--low-watermark must be at least 0 and below --high-watermark")
        _say_which_watermarks()
        client = Producer(args.redis, args.index, stream=args.stream, group=args.group,
                          high_watermark=args.high_watermark,
                          low_watermark=args.low_watermark, timeout_s=args.timeout)
    try:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        client.close()
        raise FatalError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    rejected = published = 0
    pending = []
    try:
        with client:
            for number, line in enumerate(source, start=1):
                if not line.strip():
                    continue
                try:
                    pending.append(parse_event_json(line))
                except EventError as exc:
                    rejected += 1
                    print(f"line {number}: {exc}", file=sys.stderr)
                    continue
                if len(pending) >= 100:
                    client.publish_many(pending)
                    published, pending = published + len(pending), []
            if pending:
                client.publish_many(pending)
                published += len(pending)
    finally:
        if source is not sys.stdin:
            source.close()
    print(f"published {published} events to index {args.index}"
          + (f"; {rejected} lines rejected" if rejected else ""))
    return EXIT_PARTIAL if rejected else EXIT_OK


def _say_which_watermarks() -> None:
    """The one line saying that the operator's record, not the flags, is in force (stderr)."""
    logger = logging.getLogger("tributary.backpressure")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tributary publish: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _gateway(args) -> int:
    from tributary_workers.streaming.gateway import GatewayConfig, run_gateway

    if not 0 <= args.low_watermark < args.high_watermark:
        raise FatalError("--low-watermark must be at least 0 and below --high-watermark")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_gateway(GatewayConfig(index=args.index, redis_url=args.redis, stream=args.stream, group=args.group,
                              host=args.host, port=args.port,
                              high_watermark=args.high_watermark, low_watermark=args.low_watermark,
                              retry_after_s=args.retry_after))
    return EXIT_OK


COMMANDS = {"ingest": _ingest, "query": _query, "demo": _demo, "stream": _stream,
            "publish": _publish, "gateway": _gateway, **COST_COMMANDS, **DRIFT_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("tributary", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
