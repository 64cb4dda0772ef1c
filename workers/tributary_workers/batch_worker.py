"""Container entry point of a batch shard: `tributary-batch-worker`, the command of an Indexed Job.

Every flag has an environment variable (TRIBUTARY_*), so a pod template can configure it either
way; the shard index defaults to JOB_COMPLETION_INDEX, which Kubernetes sets in Indexed Jobs.
Credentials never come as flags: the Milvus token is read from TRIBUTARY_MILVUS_TOKEN (a Secret
reference in the pod spec), S3 credentials from the standard AWS_* variables.

The report is printed as one JSON line on stdout and, when --report-file is set (for example
/dev/termination-log), written there too, so the operator can read it from the pod status.
Exit status: 0 all documents succeeded, 3 some failed, 1 fatal (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .cli import EXIT_FATAL, index_name, positive_int
from .errors import one_line

REPORT_FILE_FAILURES = 10


def _env_list(name: str) -> list[str]:
    return [item for item in os.environ.get(name, "").split(",") if item]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="tributary-batch-worker", description=__doc__.splitlines()[0])
    p.add_argument("--source", nargs="+", default=env("TRIBUTARY_SOURCE", "").split() or None,
                   help="directory, glob, s3://bucket/prefix or http(s) URLs (env TRIBUTARY_SOURCE, space-separated)")
    p.add_argument("--include", action="append", default=_env_list("TRIBUTARY_INCLUDE"),
                   help="doc_id glob to include (env TRIBUTARY_INCLUDE, comma-separated)")
    p.add_argument("--exclude", action="append", default=_env_list("TRIBUTARY_EXCLUDE"),
                   help="doc_id glob to exclude (env TRIBUTARY_EXCLUDE, comma-separated)")
    p.add_argument("--collection", type=index_name, default=env("TRIBUTARY_COLLECTION"),
                   help="target collection (env TRIBUTARY_COLLECTION)")
    p.add_argument("--milvus-uri", default=env("TRIBUTARY_MILVUS_URI"), help="env TRIBUTARY_MILVUS_URI")
    p.add_argument("--ledger", default=env("TRIBUTARY_LEDGER_URL"),
                   help="version ledger: redis://... or a SQLite path (env TRIBUTARY_LEDGER_URL)")
    p.add_argument("--checkpoint", default=env("TRIBUTARY_CHECKPOINT_URL"),
                   help="checkpoint store: redis://... or a SQLite path (env TRIBUTARY_CHECKPOINT_URL)")
    p.add_argument("--job-id", default=env("TRIBUTARY_JOB_ID"),
                   help="names this run's checkpoints (env TRIBUTARY_JOB_ID); a pod of a finished run "
                        "returns that run's report. Without it, each invocation after a finished "
                        "run starts a new one")
    p.add_argument("--shard-index", type=int,
                   default=int(env("TRIBUTARY_SHARD_INDEX", env("JOB_COMPLETION_INDEX", "0"))),
                   help="this shard (env TRIBUTARY_SHARD_INDEX, else JOB_COMPLETION_INDEX)")
    p.add_argument("--shard-count", type=positive_int, default=int(env("TRIBUTARY_SHARD_COUNT", "1")),
                   help="number of shards (env TRIBUTARY_SHARD_COUNT)")
    p.add_argument("--max-concurrency", type=positive_int, default=int(env("TRIBUTARY_MAX_CONCURRENCY", "4")))
    p.add_argument("--embed-batch-size", type=positive_int, default=int(env("TRIBUTARY_EMBED_BATCH_SIZE", "64")))
    p.add_argument("--model", default=env("TRIBUTARY_MODEL"), help="local model path (env TRIBUTARY_MODEL)")
    p.add_argument("--max-tokens", type=positive_int,
                   default=int(env("TRIBUTARY_MAX_TOKENS")) if env("TRIBUTARY_MAX_TOKENS") else None)
    p.add_argument("--overlap-tokens", type=int, default=int(env("TRIBUTARY_OVERLAP_TOKENS", "32")))
    p.add_argument("--bulk-load", action="store_true", default=env("TRIBUTARY_BULK_LOAD", "") == "true",
                   help="initial load into an empty collection (env TRIBUTARY_BULK_LOAD=true)")
    p.add_argument("--replicas", type=positive_int, default=int(env("TRIBUTARY_REPLICAS", "1")))
    p.add_argument("--metric-type", default=env("TRIBUTARY_METRIC_TYPE", "COSINE"))
    p.add_argument("--index-type", default=env("TRIBUTARY_INDEX_TYPE", "AUTOINDEX"))
    p.add_argument("--metrics-port", type=int, default=int(env("TRIBUTARY_METRICS_PORT", "0")),
                   help="serve Prometheus /metrics on this port; 0 disables (env TRIBUTARY_METRICS_PORT)")
    p.add_argument("--partial-exit-code", type=int, default=int(env("TRIBUTARY_PARTIAL_EXIT_CODE", "3")),
                   help="exit status when some documents failed (default 3; the operator uses 0, since "
                        "retrying a finished shard would not help)")
    p.add_argument("--report-file", default=env("TRIBUTARY_REPORT_FILE"),
                   help="also write the JSON report here, e.g. /dev/termination-log")
    return p


def config_from_args(args):
    from .batch import BatchConfig
    from .chunker import ChunkerConfig

    missing = [flag for flag, value in (("--source", args.source), ("--collection", args.collection),
                                        ("--milvus-uri", args.milvus_uri), ("--ledger", args.ledger),
                                        ("--checkpoint", args.checkpoint)) if not value]
    if missing:
        raise ValueError(f"missing required settings: {', '.join(missing)} (flags or TRIBUTARY_* env)")
    return BatchConfig(
        source=args.source if len(args.source) > 1 else args.source[0],
        include=args.include, exclude=args.exclude, collection=args.collection, milvus_uri=args.milvus_uri,
        ledger_url=args.ledger, checkpoint_url=args.checkpoint, job_id=args.job_id or "local",
        shard_index=args.shard_index, shard_count=args.shard_count, max_concurrency=args.max_concurrency,
        embed_batch_size=args.embed_batch_size, model=args.model,
        chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        bulk_load=args.bulk_load, replicas=args.replicas, metric_type=args.metric_type,
        index_type=args.index_type, rerun_completed=args.job_id is None,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        from . import metrics
        from .batch import BatchWorker

        config = config_from_args(args)
        metrics.serve(args.metrics_port)
        worker = BatchWorker(config)
        try:
            worker.warm_up()
            report = worker.run()
        finally:
            worker.close()
    except Exception as exc:
        if os.environ.get("TRIBUTARY_DEBUG"):
            raise
        print(f"tributary-batch-worker: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FATAL
    data = report.to_dict()
    if args.report_file:
        # Kept small: a termination message is capped at 4 KiB; the counts stay exact.
        with open(args.report_file, "w") as out:
            out.write(json.dumps({**data, "failures": data["failures"][:REPORT_FILE_FAILURES]}))
    print(json.dumps(data), flush=True)
    return args.partial_exit_code if report.documents_failed else 0


if __name__ == "__main__":
    sys.exit(main())
