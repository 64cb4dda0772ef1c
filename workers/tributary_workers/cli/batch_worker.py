"""Container entry point of a batch shard: `tributary-batch-worker`, the command of an Indexed Job.

Every flag has an environment variable (TRIBUTARY_*, named in tributary_workers.contract.env), so
a pod template can configure it either way; the shard index defaults to JOB_COMPLETION_INDEX,
which Kubernetes sets in Indexed Jobs. Credentials never come as flags: the Milvus token is read
from TRIBUTARY_MILVUS_TOKEN (a Secret reference in the pod spec), S3 credentials from the
standard AWS_* variables.

The report is printed as one JSON line on stdout and, when --report-file is set (for example
/dev/termination-log), written there too, so the operator can read it from the pod status.
Exit status: 0 all documents succeeded, 3 some failed or a prune was refused, 1 fatal (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from tributary_workers.cli.args import (
    EXIT_PARTIAL,
    Parser,
    add_chunking_options,
    add_milvus_index_options,
    add_model_options,
    add_prune_options,
    env_list,
    from_env,
    index_name,
    positive_int,
    require,
    worker_main,
)
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV

PROG = "tributary-batch-worker"
REPORT_FILE_FAILURES = 10


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--source", nargs="+", default=env_list(ENV.SOURCE, " ") or None,
                   help=f"directory, glob, s3://bucket/prefix or http(s) URLs (env {ENV.SOURCE}, space-separated)")
    p.add_argument("--include", action="append", default=env_list(ENV.INCLUDE),
                   help=f"doc_id glob to include (env {ENV.INCLUDE}, comma-separated)")
    p.add_argument("--exclude", action="append", default=env_list(ENV.EXCLUDE),
                   help=f"doc_id glob to exclude (env {ENV.EXCLUDE}, comma-separated)")
    p.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION),
                   help=f"target collection (env {ENV.COLLECTION})")
    p.add_argument("--milvus-uri", default=from_env(ENV.MILVUS_URI), help=f"env {ENV.MILVUS_URI}")
    p.add_argument("--ledger", default=from_env(ENV.LEDGER_URL),
                   help=f"version ledger: redis://... or a SQLite path (env {ENV.LEDGER_URL})")
    p.add_argument("--checkpoint", default=from_env(ENV.CHECKPOINT_URL),
                   help=f"checkpoint store: redis://..., configmap://NS/NAME or a SQLite path (env {ENV.CHECKPOINT_URL})")
    p.add_argument("--job-id", default=from_env(ENV.JOB_ID),
                   help=f"names this run's checkpoints (env {ENV.JOB_ID}); a pod of a finished run "
                        "returns that run's report. Without it, each invocation after a finished "
                        "run starts a new one")
    p.add_argument("--shard-index", type=int,
                   default=from_env(ENV.SHARD_INDEX, from_env(ENV.JOB_COMPLETION_INDEX, 0, int), int),
                   help=f"this shard (env {ENV.SHARD_INDEX}, else {ENV.JOB_COMPLETION_INDEX})")
    p.add_argument("--shard-count", type=positive_int, default=from_env(ENV.SHARD_COUNT, 1, positive_int),
                   help=f"number of shards (env {ENV.SHARD_COUNT})")
    p.add_argument("--max-concurrency", type=positive_int,
                   default=from_env(ENV.MAX_CONCURRENCY, defaults.MAX_CONCURRENCY, positive_int),
                   help=f"documents loaded at once (env {ENV.MAX_CONCURRENCY})")
    add_model_options(p, embed_batch_size=defaults.BATCH_EMBED_BATCH_SIZE)
    add_chunking_options(p, from_environment=True)
    p.add_argument("--bulk-load", action="store_true", default=from_env(ENV.BULK_LOAD, "") == "true",
                   help=f"initial load into an empty collection (env {ENV.BULK_LOAD}=true)")
    add_prune_options(p, from_environment=True)
    p.add_argument("--no-create", dest="create_collection", action="store_false",
                   default=from_env(ENV.CREATE_COLLECTION, "true") != "false",
                   help=f"fail when the collection does not exist instead of creating it (env {ENV.CREATE_COLLECTION}=false)")
    p.add_argument("--source-id", default=from_env(ENV.SOURCE_ID),
                   help=f"names this source for pruning (env {ENV.SOURCE_ID}); default: the sources and filters")
    add_milvus_index_options(p)
    p.add_argument("--partial-exit-code", type=int, default=from_env(ENV.PARTIAL_EXIT_CODE, EXIT_PARTIAL, int),
                   help="exit status when some documents failed (default 3; the operator uses 0, since "
                        "retrying a finished shard would not help)")
    p.add_argument("--report-file", default=from_env(ENV.REPORT_FILE),
                   help=f"also write the JSON report here, e.g. /dev/termination-log (env {ENV.REPORT_FILE})")
    return p


def config_from_args(args):
    from tributary_workers.batch.worker import BatchConfig
    from tributary_workers.pipeline.chunker import ChunkerConfig

    require(args, "--source", "--collection", "--milvus-uri", "--ledger", "--checkpoint")
    return BatchConfig(
        source=args.source if len(args.source) > 1 else args.source[0],
        include=args.include, exclude=args.exclude, collection=args.collection, milvus_uri=args.milvus_uri,
        ledger_url=args.ledger, checkpoint_url=args.checkpoint, job_id=args.job_id or "local",
        shard_index=args.shard_index, shard_count=args.shard_count, max_concurrency=args.max_concurrency,
        embed_batch_size=args.embed_batch_size, model=args.model, dimension=args.dimension,
        backend=args.backend, quantize=args.quantize,
        chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        bulk_load=args.bulk_load, create_collection=args.create_collection, replicas=args.replicas, metric_type=args.metric_type,
        index_type=args.index_type, index_params=args.index_params, db_name=args.milvus_database,
        max_seq_length=args.max_sequence_length, rerun_completed=args.job_id is None,
        prune=args.prune, prune_max_fraction=args.prune_max_fraction, source_id=args.source_id,
    )


def _run(args) -> int:
    from tributary_workers import metrics
    from tributary_workers.batch.worker import BatchWorker

    config = config_from_args(args)
    metrics.serve(args.metrics_port)
    worker = BatchWorker(config)
    try:
        worker.warm_up()
        report = worker.run()
    finally:
        worker.close()
    data = report.to_dict()
    if args.report_file:
        # Kept small: a termination message is capped at 4 KiB; the counts stay exact.
        with open(args.report_file, "w") as out:
            out.write(json.dumps({**data, "failures": data["failures"][:REPORT_FILE_FAILURES]}))
    print(json.dumps(data), flush=True)
    return args.partial_exit_code if report.documents_failed or report.prune_refused else 0


def main(argv: list[str] | None = None) -> int:
    return worker_main(PROG, build_parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
