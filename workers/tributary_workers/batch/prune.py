"""Sync semantics for batch runs: what vanished from the source, and whether to remove it.

A batch run records, next to the ledger, the provenance of every document it writes or finds
unchanged: the listed item (file) it came from and its version, per (collection, source). After a
listing that completed without a source error, a document of this shard is pruned when its origin
is no longer listed. Guards:

- only documents this source wrote last: when the ledger's fence moved past the recorded version
  (the stream or another source wrote it since), it is not ours to remove, and is forgotten;
- a run never prunes more than ``max_fraction`` of the documents this source wrote in its shard
  (a mistyped prefix or an emptied bucket must not wipe an index): it refuses and says so;
- the tombstone is the ledger's own versioned delete one above the fence, so a concurrent newer
  stream upsert still wins.

Records removed from inside a multi-document file that is still listed are not pruned (the file's
origin is still there); the item-level rule is the one ``rsync --delete`` users expect.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from tributary_workers.contract import defaults
from tributary_workers.ledger import LedgerRecord, Provenance

DEFAULT_MAX_FRACTION = defaults.PRUNE_MAX_FRACTION


@dataclass(frozen=True)
class PrunePlan:
    prune: dict[str, int]  # doc_id -> tombstone version
    forget: tuple[str, ...]  # provenance of documents someone else wrote since: not ours anymore
    known: int  # documents of this shard the source wrote (the fraction's denominator)
    gone: int  # of those, the ones to remove (also when refused)
    refused: bool
    message: str


def plan_prune(provenance: Mapping[str, Provenance], listed: Collection[str], in_shard: Callable[[str], bool],
               records: Mapping[str, LedgerRecord | None], max_fraction: float) -> PrunePlan:
    """The documents to tombstone, from what the source wrote, what it lists now, and the ledger."""
    mine = {doc_id: p for doc_id, p in provenance.items() if in_shard(p.origin)}
    gone = [doc_id for doc_id, p in mine.items() if p.origin not in listed]
    prune: dict[str, int] = {}
    forget: list[str] = []
    for doc_id in gone:
        record = records.get(doc_id)
        if record is None or record.deleted or record.fence != mine[doc_id].version:
            forget.append(doc_id)  # deleted already, or written since by the stream or another source
        else:
            prune[doc_id] = record.fence + 1
    known = len(mine)
    if prune and len(prune) > max_fraction * known:
        share = len(prune) / known
        return PrunePlan({}, tuple(forget), known, len(prune), True,
                         f"prune refused: {len(prune)} of {known} documents ({share:.0%}) are gone from the "
                         f"source, over the {max_fraction:.0%} limit (prune.maxFraction); nothing was "
                         f"removed — check the source, or raise the limit for one run")
    return PrunePlan(prune, tuple(forget), known, len(prune), False, "")
