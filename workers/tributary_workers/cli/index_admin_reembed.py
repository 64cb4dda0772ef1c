"""`tributary-index-admin backfill` and `catchup`: a re-embedding's copy steps (tributary_workers.reembed).

Flags default from TRIBUTARY_* variables (contract.env, "re-embedding steps"); the StepReport
(contract.reembed) goes to stdout and --report-file. Exit 0 whenever a report was written, ok or
not (Behind, DocumentsFailed: the operator reads it and decides); EXIT_PERMANENT for
RechunkUnavailable and wrong settings; 1 when Milvus or Redis is unreachable. See docs/reembedding.md.
"""

from __future__ import annotations

import argparse

from tributary_workers.cli.args import (
    EXIT_OK,
    add_chunking_options,
    add_milvus_index_options,
    add_model_options,
    from_env,
    index_name,
    positive_int,
    require,
)
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.contract.exits import EXIT_PERMANENT
from tributary_workers.contract.reembed import Step

MAX_PASSES = 5


def register_reembed(sub) -> None:
    for step, text in ((Step.BACKFILL, "copy one shard of the active collection into the candidate"),
                       (Step.CATCHUP, "re-embed what the candidate lacks of the active, repair set included")):
        add_reembed_step(sub.add_parser(step.value, help=text), step)


def add_reembed_step(p: argparse.ArgumentParser, step: Step) -> None:
    """The flags of backfill and catch-up (contract.reembed), each also a TRIBUTARY_* variable."""
    p.add_argument("--active-collection", type=index_name, default=from_env(ENV.ACTIVE_COLLECTION),
                   help=f"the collection copied from (env {ENV.ACTIVE_COLLECTION})")
    p.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION),
                   help=f"the candidate collection (env {ENV.COLLECTION})")
    p.add_argument("--milvus-uri", default=from_env(ENV.MILVUS_URI), help=f"env {ENV.MILVUS_URI}")
    p.add_argument("--ledger", default=from_env(ENV.LEDGER_URL),
                   help=f"the version ledger, redis://... (env {ENV.LEDGER_URL})")
    p.add_argument("--index", default=from_env(ENV.INDEX),
                   help=f"routing index whose candidate repair set catch-up drains (env {ENV.INDEX})")
    p.add_argument("--job-id", default=from_env(ENV.JOB_ID, "local"),
                   help=f"names the bulk load and the checkpoints (env {ENV.JOB_ID})")
    p.add_argument("--report-file", default=from_env(ENV.REPORT_FILE),
                   help=f"also write the JSON report here, e.g. /dev/termination-log (env {ENV.REPORT_FILE})")
    p.add_argument("--rechunk", action="store_true", default=from_env(ENV.RECHUNK, "") == "true",
                   help=f"the chunking changed: stored chunks can't be reused (env {ENV.RECHUNK}=true)")
    if step is Step.BACKFILL:
        p.add_argument("--shard-index", type=int,
                       default=from_env(ENV.SHARD_INDEX, from_env(ENV.JOB_COMPLETION_INDEX, 0, int), int),
                       help=f"this shard (env {ENV.SHARD_INDEX}, else {ENV.JOB_COMPLETION_INDEX})")
        p.add_argument("--shard-count", type=positive_int, default=from_env(ENV.SHARD_COUNT, 1, positive_int),
                       help=f"number of shards (env {ENV.SHARD_COUNT})")
        p.add_argument("--checkpoint-url", default=from_env(ENV.CHECKPOINT_URL),
                       help=f"redis://..., configmap://NS/NAME or a SQLite path (env {ENV.CHECKPOINT_URL})")
    else:
        p.add_argument("--max-passes", type=positive_int, default=MAX_PASSES, help="passes before reporting Behind")
    add_model_options(p, embed_batch_size=defaults.BATCH_EMBED_BATCH_SIZE)
    add_chunking_options(p, from_environment=True)
    add_milvus_index_options(p)
    p.set_defaults(func=reembed_step)


def reembed_step(args: argparse.Namespace) -> int:
    """backfill / catchup: the StepReport on stdout and in --report-file; exit 0 unless no rerun can help."""
    from tributary_workers.pipeline.chunker import ChunkerConfig
    from tributary_workers.reembed.backfill import backfill
    from tributary_workers.reembed.catchup import catchup
    from tributary_workers.reembed.copy import ReembedConfig

    require(args, "--active-collection", "--collection", "--milvus-uri", "--ledger")
    config = ReembedConfig(
        active_collection=args.active_collection, collection=args.collection, milvus_uri=args.milvus_uri,
        ledger_url=args.ledger, job_id=args.job_id, index=args.index, rechunk=args.rechunk,
        shard_index=getattr(args, "shard_index", 0), shard_count=getattr(args, "shard_count", 1),
        checkpoint_url=getattr(args, "checkpoint_url", None), max_passes=getattr(args, "max_passes", MAX_PASSES),
        embed_batch_size=args.embed_batch_size, model=args.model, dimension=args.dimension,
        backend=args.backend, quantize=args.quantize, max_seq_length=args.max_sequence_length,
        chunking=ChunkerConfig(max_tokens=args.max_tokens, overlap_tokens=args.overlap_tokens),
        replicas=args.replicas, metric_type=args.metric_type, index_type=args.index_type,
        index_params=args.index_params, db_name=args.milvus_database,
    )
    report = (backfill if args.command == Step.BACKFILL.value else catchup)(config)
    text = report.to_json()
    print(text, flush=True)
    if args.report_file:
        with open(args.report_file, "w") as out:
            out.write(text)
    # Behind or some documents failed: the operator reads the report and decides; a rerun of a
    # step whose chunking can't be honoured would fail the same way.
    return EXIT_PERMANENT if report.reason == "RechunkUnavailable" else EXIT_OK
