"""The swap and retire steps: repoint an index's alias, and drop a collection nothing serves any more.

``swap`` moves the alias to a collection only while it still points at the expected one (or is
already there: a re-run is harmless), after making the target servable; a rollback is the same
swap with the two collections exchanged. Milvus has no compare-and-swap for aliases, so the check
narrows the window for a concurrent repoint but cannot close it (docs/reembedding-gates.md).

``retire`` refuses a collection any alias still points at (Milvus >= 2.5.5 refuses to drop one
too), else releases and drops it and its text store (pipeline.texts) and deletes its ledger
namespace: the Redis keys of its ledger and provenance records and the index's repair set for it
(or its rows of a SQLite ledger).
Both are idempotent: an already-swapped alias and an already-dropped collection report success.
"""

from __future__ import annotations

import time
from typing import Any

from tributary_workers.contract.keys import LEDGER_PREFIX, PROVENANCE_PREFIX, repair_key
from tributary_workers.contract.reembed import Step, StepReport
from tributary_workers.pipeline.texts import companion_name
from tributary_workers.reembed import collection as coll

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DELETE_BATCH = 500


def swap(client: Any, alias: str, target: str, expected: str, writer_config) -> StepReport:
    """Point alias at target if it points at expected now; writer_config: how to index/load target."""
    current = coll.alias_target(client, alias)
    if current == target:
        return StepReport(Step.SWAP, True, "AlreadySwapped", f"alias {alias} already points at {target}",
                          model=coll.describe(client, target).model_id)
    if current != expected:
        where = f"points at {current}" if current else "does not exist"
        return StepReport(Step.SWAP, False, "AliasMoved",
                          f"alias {alias} {where}, not at the expected {expected}: refusing to repoint it to {target}")
    info = coll.describe(client, target)
    loaded = coll.ensure_servable(client, info, writer_config)  # before traffic moves, never after
    # The last look before the move: the load above can take minutes on a large collection.
    current = coll.alias_target(client, alias)
    if current != expected:
        return StepReport(Step.SWAP, False, "AliasMoved",
                          f"alias {alias} moved to {current} while {target} loaded: refusing to repoint it")
    started = time.perf_counter()
    client.alter_alias(target, alias)
    swap_ms = int(round((time.perf_counter() - started) * 1000))
    return StepReport(Step.SWAP, True, "Swapped", f"alias {alias} now points at {target} (was {expected})",
                      {"swap_ms": swap_ms, "loaded": int(loaded)}, model=info.model_id)


def ledger_patterns(collection: str) -> list[str]:
    """SCAN patterns of a collection's ledger namespace (its {collection} hash tag; names carry no
    glob characters: contract index names are letters, digits and underscores)."""
    return [f"{LEDGER_PREFIX}:{{{collection}}}:*", f"{PROVENANCE_PREFIX}:{{{collection}}}:*"]


def delete_redis_namespace(url: str, collection: str, index: str | None) -> int:
    from tributary_workers.ledger.connect import redis_client

    client = redis_client(url)
    deleted = 0
    try:
        keys = [repair_key(index, collection)] if index else []
        for pattern in ledger_patterns(collection):
            for key in client.scan_iter(match=pattern, count=DELETE_BATCH):
                keys.append(key)
                if len(keys) >= DELETE_BATCH:
                    deleted += client.unlink(*keys)
                    keys = []
        if keys:
            deleted += client.unlink(*keys)
    finally:
        client.close()
    return deleted


def delete_sqlite_namespace(path: str, collection: str) -> int:
    import sqlite3
    from pathlib import Path

    if not Path(path).exists():
        return 0
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return sum(db.execute(f"DELETE FROM {table} WHERE namespace = ?", (collection,)).rowcount
                   for table in ("ledger", "provenance") if table in tables)


def delete_namespace(ledger_url: str, collection: str, index: str | None) -> int:
    if ledger_url.startswith(REDIS_SCHEMES):
        return delete_redis_namespace(ledger_url, collection, index)
    return delete_sqlite_namespace(ledger_url.removeprefix("sqlite://"), collection)


def retire(client: Any, collection: str, alias: str | None, ledger_url: str | None,
           index: str | None) -> StepReport:
    """Drop collection (its text store and its ledger namespace too) unless an alias still points at it."""
    rows = 0
    exists = client.has_collection(collection)
    if exists:
        aliased = coll.aliases_of(client, collection)
        if alias and alias not in aliased and coll.alias_target(client, alias) == collection:
            aliased.append(alias)  # belt and braces: list_aliases answers differ between servers
        if aliased:
            return StepReport(Step.RETIRE, False, "StillAliased",
                              f"collection {collection} is still served by alias {', '.join(aliased)}: "
                              "swap the alias away first")
        rows = coll.row_count(client, collection)
        client.release_collection(collection)
        client.drop_collection(collection)
    texts = companion_name(collection)
    if client.has_collection(texts):  # its parsed texts (pipeline.texts) go with it
        client.release_collection(texts)
        client.drop_collection(texts)
    keys = delete_namespace(ledger_url, collection, index) if ledger_url else 0
    gone = "dropped" if exists else "was already gone"
    ledger = f", {keys} ledger keys deleted" if ledger_url else ""
    return StepReport(Step.RETIRE, True, "Retired", f"collection {collection} {gone} ({rows} rows){ledger}",
                      {"rows": rows, "keys": keys})
