"""`tributary-index-admin drift`: the periodic check of an EmbeddingIndex's active collection.

It reports what needs no source to tell (batch/drift.py): rows whose document has no live ledger
record (orphans) and rows of another model than the collection records (foreign). Gone and stale
documents need a source listing: `tributary drift SOURCE --index ...` and IngestionJob prune.
One StepReport (contract.reembed, step drift) on stdout and in --report-file; exit 0 whatever it
found (the operator reads the report), 1 with one line when Milvus or Redis is unreachable.
"""

from __future__ import annotations

import argparse

from tributary_workers.cli.args import EXIT_OK, from_env, index_name, require
from tributary_workers.contract import env as ENV


def register(subparsers) -> None:
    d = subparsers.add_parser("drift", help="orphan and foreign-model rows of a collection")
    d.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION), help=f"env {ENV.COLLECTION}")
    d.add_argument("--milvus-uri", default=from_env(ENV.MILVUS_URI), help=f"env {ENV.MILVUS_URI}")
    d.add_argument("--milvus-database", default=from_env(ENV.MILVUS_DATABASE), help=f"env {ENV.MILVUS_DATABASE}")
    d.add_argument("--ledger", default=from_env(ENV.LEDGER_URL),
                   help=f"the collection's version ledger: redis://... or a SQLite path (env {ENV.LEDGER_URL})")
    d.add_argument("--report-file", default=from_env(ENV.REPORT_FILE),
                   help=f"also write the StepReport here (env {ENV.REPORT_FILE})")
    d.set_defaults(func=drift)


def drift(args: argparse.Namespace) -> int:
    from tributary_workers.batch.drift import find_drift, index_drift, row_summaries
    from tributary_workers.cli.index_admin_gates import _reachable, emit
    from tributary_workers.ledger import open_ledger
    from tributary_workers.pipeline.writer import CollectionNotFoundError, open_client

    require(args, "--collection", "--milvus-uri", "--ledger")
    client = open_client(args.milvus_uri, db_name=args.milvus_database)
    try:
        def read():
            if not client.has_collection(args.collection):
                raise CollectionNotFoundError(f"collection {args.collection} does not exist")
            properties = client.describe_collection(args.collection).get("properties") or {}
            return properties.get("tributary.model_id"), row_summaries(client, args.collection)

        model_id, rows = _reachable(read, args.milvus_uri)
    finally:
        client.close()
    ledger = open_ledger(args.ledger, namespace=args.collection)
    try:
        records = {doc_id: ledger.get(doc_id) for doc_id in rows}
    finally:
        ledger.close()
    report = index_drift(find_drift(args.collection, model_id, rows, records, {}, {}))
    return emit(report, args, failure_exit=EXIT_OK)
