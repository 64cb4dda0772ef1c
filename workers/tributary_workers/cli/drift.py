"""`tributary drift`: what in an index no longer matches its source, its model or its ledger.

Exit status 0 when clean, 3 when drift was found. ``--fix`` tombstones orphans and re-indexes
stale documents (only when asked); documents gone from the source are removed by
``tributary ingest --prune``, rows of another model only by re-embedding into a new collection.
"""

from __future__ import annotations

import json

from dataclasses import replace

from tributary_workers.cli.args import EXIT_OK, EXIT_PARTIAL, FatalError, index_name

FIX_WRITER = "tributary-drift-fix"


def add_drift_command(commands) -> None:
    drift = commands.add_parser("drift", help="report rows that no longer match their source, model or ledger",
                                description=__doc__.splitlines()[0])
    drift.add_argument("source", nargs="+", metavar="SOURCE", help="the source the index is ingested from")
    drift.add_argument("--index", required=True, type=index_name)
    drift.add_argument("--include", action="append", default=[], metavar="GLOB")
    drift.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    drift.add_argument("--source-id", help="the source's name for provenance (an IngestionJob's: "
                                           "ingestionjob/NAMESPACE/NAME); default: the sources and filters")
    drift.add_argument("--ledger", help="version ledger: redis://... or a SQLite path (default: the local mode's)")
    drift.add_argument("--fix", action="store_true", help="tombstone orphans and re-index stale documents")
    drift.add_argument("--json", action="store_true", help="print the report as one JSON object")


def glob_escape(doc_id: str) -> str:
    """An include glob matching exactly this doc_id (the DocIdFilter syntax has classes, not escapes)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in doc_id)


def _drift(args) -> int:
    from tributary_workers.batch.drift import find_drift, row_summaries
    from tributary_workers.batch.worker import BatchConfig
    from tributary_workers.ledger import open_ledger
    from tributary_workers.pipeline.sources import open_source
    from tributary_workers.cli.commands import milvus_uri
    from tributary_workers.pipeline.writer import open_client

    uri = milvus_uri(args)
    source = args.source if len(args.source) > 1 else args.source[0]
    config = BatchConfig(source=source, collection=args.index, milvus_uri=uri, include=args.include,
                         exclude=args.exclude, ledger_url=args.ledger or str(args.home / "ledger.sqlite"),
                         checkpoint_url=str(args.home / "checkpoints.sqlite"), source_id=args.source_id)
    client = open_client(uri)
    try:
        if not client.has_collection(args.index):
            raise FatalError(f"index {args.index!r} does not exist in Milvus at {uri}")
        properties = client.describe_collection(args.index).get("properties") or {}
        rows = row_summaries(client, args.index)
    finally:
        client.close()
    listing = open_source(source, include=args.include, exclude=args.exclude)
    listing.warm_up()
    refs = {ref.doc_id: ref for ref in listing.list()}
    ledger = open_ledger(config.ledger_url, namespace=args.index)
    try:
        records = {doc_id: ledger.get(doc_id) for doc_id in rows}
        report = find_drift(args.index, properties.get("tributary.model_id"), rows, records,
                            ledger.provenance(config.provenance_source),
                            {origin: ref.version for origin, ref in refs.items()})
        fixed = _fix(args, config, report, rows, records, ledger) if args.fix and not report.clean else {}
    finally:
        ledger.close()
    if args.json:
        print(json.dumps({**report.to_dict(), **({"fixed": fixed} if args.fix else {})}))
    else:
        _print(report, fixed)
    return EXIT_OK if report.clean else EXIT_PARTIAL


def _fix(args, config, report, rows, records, ledger) -> dict[str, int]:
    from tributary_workers.batch.worker import BatchWorker
    from tributary_workers.pipeline.writer import MilvusWriter, open_client

    client = open_client(config.milvus_uri)
    try:
        for doc_id in report.orphans:
            # A tombstone at the newest row's version fences the rows out for good, then they go.
            version = max(rows[doc_id].versions)
            record = records.get(doc_id)
            if record is None:
                ledger.tombstone(doc_id, version, FIX_WRITER)
            client.delete(config.collection, filter=MilvusWriter.up_to(doc_id, max(version, record.fence if record else 0)))
    finally:
        client.close()
    reindexed = 0
    if report.stale:
        worker = BatchWorker(replace(config, include=[glob_escape(d) for d in report.stale], exclude=[],
                                     job_id=f"drift-fix-{args.index}"))
        try:
            worker.warm_up()
            reindexed = worker.run().documents_succeeded
        finally:
            worker.close()
    return {"orphans": len(report.orphans), "stale": reindexed}


def _print(report, fixed: dict[str, int]) -> None:
    print(f"index {report.collection} (model {report.model_id or 'unrecorded'}): {report.documents} documents, "
          + ("no drift" if report.clean else ", ".join(f"{len(ids)} {kind}" for kind, ids in report.kinds())))
    hints = {"gone": "gone from the source: `tributary ingest --prune` removes them",
             "stale": "newer in the source than in the index: re-ingest, or --fix",
             "foreign": "embedded with another model: re-embed into a new collection",
             "orphans": "no ledger record: --fix removes them"}
    for kind, ids in report.kinds():
        if ids:
            print(f"  {kind} ({hints[kind]}): " + ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""))
    if fixed:
        print(f"fixed: {fixed['orphans']} orphans removed, {fixed['stale']} stale documents re-indexed")


DRIFT_COMMANDS = {"drift": _drift}
