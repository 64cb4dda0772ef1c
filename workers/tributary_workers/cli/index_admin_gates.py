"""`tributary-index-admin validate | swap | retire`: the gates and the cutover of a re-embedding.

    validate  --collection CANDIDATE --active-collection ACTIVE --model M: finish the candidate's
              bulk load (index, --replicas), then measure the gates (reembed/validate.py)
    swap      --alias A --collection C --expect-collection P: point A at C only while it points at P
              (a rollback is the same with C and P exchanged)
    retire    --collection P [--alias A] [--ledger URL --index I]: drop P unless an alias serves it,
              with its ledger namespace and repair set

Each writes one StepReport (contract.reembed) as JSON to stdout and to --report-file. Exit 0 when
the step reached a verdict (validate with failed gates too: the operator reads the report);
2 (EXIT_PERMANENT) when swap finds the alias moved, retire finds the collection still aliased,
or a setting is wrong; 1 with one line on stderr when Milvus is unreachable.
"""

from __future__ import annotations

import argparse
import json
import os

from tributary_workers.cli.args import (
    EXIT_OK,
    add_milvus_index_options,
    add_model_options,
    fraction,
    from_env,
    index_name,
    positive_int,
    require,
)
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.contract.exits import EXIT_PERMANENT
from tributary_workers.contract.reembed import StepReport


def sample_queries(value: str) -> tuple[str, ...]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc.msg}") from None
    if not isinstance(parsed, list) or not all(isinstance(q, str) and q.strip() for q in parsed):
        raise argparse.ArgumentTypeError("must be a JSON list of non-empty strings")
    return tuple(parsed)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--milvus-uri", default=from_env(ENV.MILVUS_URI), help=f"env {ENV.MILVUS_URI}")
    parser.add_argument("--report-file", default=from_env(ENV.REPORT_FILE),
                        help=f"also write the StepReport here, e.g. /dev/termination-log (env {ENV.REPORT_FILE})")


def register(subparsers) -> None:
    """Add validate, swap and retire to tributary-index-admin's subcommands."""
    v = subparsers.add_parser("validate", help="finish the candidate's bulk load and measure the gates")
    _common(v)
    v.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION),
                   help=f"the candidate collection (env {ENV.COLLECTION})")
    v.add_argument("--active-collection", type=index_name, default=from_env(ENV.ACTIVE_COLLECTION),
                   help=f"the collection the alias serves now (env {ENV.ACTIVE_COLLECTION})")
    add_model_options(v, embed_batch_size=defaults.BATCH_EMBED_BATCH_SIZE)  # --model: the candidate's
    add_milvus_index_options(v)
    v.add_argument("--active-model", default=from_env(ENV.ACTIVE_MODEL),
                   help=f"the active collection's model (default: the bundled one; env {ENV.ACTIVE_MODEL})")
    v.add_argument("--active-quantize", choices=defaults.QUANTIZATIONS,
                   default=from_env(ENV.ACTIVE_QUANTIZE, defaults.QUANTIZE),
                   help=f"the active model's quantization (int8 runs on onnx; env {ENV.ACTIVE_QUANTIZE})")
    v.add_argument("--min-document-ratio", type=fraction,
                   default=from_env(ENV.MIN_DOCUMENT_RATIO, defaults.MIN_DOCUMENT_RATIO, fraction),
                   help=f"default {defaults.MIN_DOCUMENT_RATIO} (env {ENV.MIN_DOCUMENT_RATIO})")
    v.add_argument("--min-self-recall", type=fraction,
                   default=from_env(ENV.MIN_SELF_RECALL, defaults.MIN_SELF_RECALL, fraction),
                   help=f"default {defaults.MIN_SELF_RECALL} (env {ENV.MIN_SELF_RECALL})")
    v.add_argument("--min-recall-at-k", type=fraction, default=from_env(ENV.MIN_RECALL_AT_K, None, fraction),
                   help=f"gate the sample queries' overlap at this (default: reported only; env {ENV.MIN_RECALL_AT_K})")
    v.add_argument("--top-k", type=positive_int, default=from_env(ENV.TOP_K, defaults.TOP_K, positive_int),
                   help=f"default {defaults.TOP_K} (env {ENV.TOP_K})")
    v.add_argument("--sample-size", type=positive_int,
                   default=from_env(ENV.SAMPLE_SIZE, defaults.SAMPLE_SIZE, positive_int),
                   help=f"chunks sampled for self-retrieval (default {defaults.SAMPLE_SIZE}; env {ENV.SAMPLE_SIZE})")
    v.add_argument("--sample-queries", type=sample_queries, default=from_env(ENV.SAMPLE_QUERIES, (), sample_queries),
                   help=f"JSON list of queries compared between active and candidate (env {ENV.SAMPLE_QUERIES})")
    v.set_defaults(func=validate)

    s = subparsers.add_parser("swap", help="point the alias at a collection, only from the expected one")
    _common(s)
    s.add_argument("--alias", type=index_name, default=from_env(ENV.ALIAS), help=f"env {ENV.ALIAS}")
    s.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION),
                   help=f"where the alias should point (env {ENV.COLLECTION})")
    s.add_argument("--expect-collection", type=index_name, default=from_env(ENV.EXPECT_COLLECTION),
                   help=f"where it must point now (env {ENV.EXPECT_COLLECTION})")
    add_milvus_index_options(s)  # how to index and load the target if it is not servable yet
    s.set_defaults(func=swap)

    r = subparsers.add_parser("retire", help="drop a collection no alias serves, with its ledger namespace")
    _common(r)
    r.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION), help=f"env {ENV.COLLECTION}")
    r.add_argument("--alias", type=index_name, default=from_env(ENV.ALIAS),
                   help=f"the index's alias, checked too (env {ENV.ALIAS})")
    r.add_argument("--ledger", default=from_env(ENV.LEDGER_URL),
                   help=f"redis:// URL or SQLite path of the ledger whose namespace goes too (env {ENV.LEDGER_URL})")
    r.add_argument("--index", default=from_env(ENV.INDEX),
                   help=f"the EmbeddingIndex whose repair set for the collection goes too (env {ENV.INDEX})")
    r.add_argument("--milvus-database", default=from_env(ENV.MILVUS_DATABASE), help=f"env {ENV.MILVUS_DATABASE}")
    r.set_defaults(func=retire)


def _client(args: argparse.Namespace):
    from tributary_workers.pipeline.writer import open_client

    return open_client(args.milvus_uri, db_name=args.milvus_database)


def _writer_config(args: argparse.Namespace):
    from tributary_workers.pipeline.writer import WriterConfig

    return WriterConfig(uri=args.milvus_uri, collection="", model_id="", dimension=0,
                        token=os.environ.get(ENV.MILVUS_TOKEN) or None, db_name=args.milvus_database,
                        metric_type=args.metric_type, index_type=args.index_type, index_params=args.index_params,
                        replicas=args.replicas)


def _reachable(call, uri: str):
    """Run a Milvus call; a gRPC failure becomes one line naming Milvus (exit 1, retried)."""
    from tributary_workers.errors import PermanentError
    from tributary_workers.pipeline.writer import MilvusUnavailableError

    try:
        return call()
    except (PermanentError, MilvusUnavailableError):
        raise
    except Exception as exc:
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, MilvusException) or type(exc).__module__.startswith("grpc"):
            raise MilvusUnavailableError(f"Milvus at {uri}: {' '.join(str(exc).split())}") from exc
        raise


def emit(report: StepReport, args: argparse.Namespace, failure_exit: int = EXIT_PERMANENT) -> int:
    text = report.to_json()
    print(text, flush=True)
    if args.report_file:
        with open(args.report_file, "w") as out:
            out.write(text)
    return EXIT_OK if report.ok else failure_exit


def validate(args: argparse.Namespace) -> int:
    from tributary_workers.reembed.validate import ModelSpec, ValidateSettings
    from tributary_workers.reembed.validate import validate as run_validate

    require(args, "--milvus-uri", "--collection", "--active-collection")
    active_backend = "onnx" if args.active_quantize != "none" else args.backend
    settings = ValidateSettings(
        candidate=args.collection, active=args.active_collection,
        candidate_model=ModelSpec(args.model, args.backend, args.quantize, args.embed_batch_size,
                                  args.max_sequence_length),
        active_model=ModelSpec(args.active_model, active_backend, args.active_quantize, args.embed_batch_size,
                               args.max_sequence_length),
        dimension=args.dimension, metric_type=args.metric_type, min_document_ratio=args.min_document_ratio,
        min_self_recall=args.min_self_recall, min_recall_at_k=args.min_recall_at_k, top_k=args.top_k,
        sample_size=args.sample_size, sample_queries=tuple(args.sample_queries or ()),
    )
    client = _client(args)
    try:
        report = _reachable(lambda: run_validate(client, settings, _writer_config(args)), args.milvus_uri)
    finally:
        client.close()
    return emit(report, args, failure_exit=EXIT_OK)  # failed gates are a verdict the operator reads


def swap(args: argparse.Namespace) -> int:
    from tributary_workers.reembed.swap import swap as run_swap

    require(args, "--milvus-uri", "--alias", "--collection", "--expect-collection")
    client = _client(args)
    try:
        report = _reachable(lambda: run_swap(client, args.alias, args.collection, args.expect_collection,
                                             _writer_config(args)), args.milvus_uri)
    finally:
        client.close()
    return emit(report, args)


def retire(args: argparse.Namespace) -> int:
    from tributary_workers.reembed.swap import retire as run_retire

    require(args, "--milvus-uri", "--collection")
    client = _client(args)
    try:
        report = _reachable(lambda: run_retire(client, args.collection, args.alias, args.ledger, args.index),
                            args.milvus_uri)
    finally:
        client.close()
    return emit(report, args)
