"""The version ledger: the consistency rule of the whole product, as pure functions.

One record per (collection, doc_id) fences every write on the document's version, so batch and
stream writers can race on the same document in any order and the document still ends at its
highest version:

- ``fence``        the highest version ever accepted (an upsert or a delete);
- ``content_hash`` hash of the content at ``fence`` (None for a tombstone);
- ``data_version`` the version whose chunk rows are live in Milvus (None for a tombstone); it can
                   lag ``fence`` when a newer version arrived with unchanged content, which moves the
                   fence without rewriting any rows;
- ``deleted``      a versioned tombstone: an upsert at or below ``fence`` can never resurrect it;
- ``writer`` / ``chunk_count``  who committed it and how many chunks, so a resumed batch run can
                   count its own pre-crash commits as succeeded rather than unchanged.

Protocol for one upsert of (doc, v, hash) — writes are lock-free because chunk primary keys include
the version, so writers of different versions never overwrite each other's rows:
    1. ``decide``  -> WRITE | UNCHANGED | STALE (UNCHANGED may advance the fence atomically).
    2. WRITE: upsert the version-v rows into Milvus.
    3. ``commit``  -> COMMITTED (or ALREADY on a retry): delete the doc's rows with version < v.
                   -> STALE (a newer version won meanwhile): delete our own version-v rows,
                      unless the record says version v is the live one.
Delete of (doc, v): ``tombstone`` -> COMMITTED: delete the doc's rows with version <= v.

The rules are pure functions (``decide_rule``, ``commit_rule``, ``tombstone_rule``) so they are
unit-tested without a store; SQLite applies them inside an IMMEDIATE transaction and Redis runs
the same rules as Lua scripts, atomically on the server.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Outcome(str, enum.Enum):
    WRITE = "write"
    UNCHANGED = "unchanged"
    STALE = "stale"
    COMMITTED = "committed"
    ALREADY = "already"


@dataclass(frozen=True)
class LedgerRecord:
    fence: int
    content_hash: str | None
    data_version: int | None
    deleted: bool
    writer: str = ""
    chunk_count: int = 0


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    record: LedgerRecord | None  # the record after the operation (None: the document is unknown)


# --- pure rules ---------------------------------------------------------------------------------


def decide_rule(current: LedgerRecord | None, version: int, content_hash: str) -> tuple[Outcome, LedgerRecord | None]:
    """Before embedding: is there anything to write? Returns the outcome and the record to store."""
    if current is None:
        return Outcome.WRITE, None
    if current.fence > version:
        return Outcome.STALE, current
    if current.fence == version:
        if not current.deleted and current.content_hash == content_hash:
            return Outcome.UNCHANGED, current
        # The same version with other content (or a tombstone at this version): first one wins.
        return Outcome.STALE, current
    if not current.deleted and current.content_hash == content_hash:
        # Newer version, same content: move the fence so an older write can't sneak in later,
        # and keep the live rows as they are (data_version stays).
        return Outcome.UNCHANGED, dataclasses.replace(current, fence=version)
    return Outcome.WRITE, current


def commit_rule(
    current: LedgerRecord | None, version: int, content_hash: str, writer: str, chunk_count: int
) -> tuple[Outcome, LedgerRecord | None]:
    """After the version-v rows are written: make them the live version, unless a newer one won."""
    if current is not None:
        if (
            current.fence == version
            and current.data_version == version
            and current.content_hash == content_hash
            and not current.deleted
        ):
            return Outcome.ALREADY, current
        if current.fence >= version:
            return Outcome.STALE, current
    record = LedgerRecord(
        fence=version,
        content_hash=content_hash,
        data_version=version,
        deleted=False,
        writer=writer,
        chunk_count=chunk_count,
    )
    return Outcome.COMMITTED, record


def tombstone_rule(current: LedgerRecord | None, version: int, writer: str) -> tuple[Outcome, LedgerRecord | None]:
    """A versioned delete: only newer than everything seen so far takes effect."""
    if current is not None:
        if current.fence == version and current.deleted:
            return Outcome.ALREADY, current
        if current.fence >= version:
            return Outcome.STALE, current
    record = LedgerRecord(fence=version, content_hash=None, data_version=None, deleted=True, writer=writer)
    return Outcome.COMMITTED, record


@dataclass(frozen=True)
class Provenance:
    """Where a source's document came from: the listed item (file) holding it, and its version.

    Recorded by batch runs for every document they write or find unchanged, kept next to the
    ledger per (collection, source), so a later run can tell what vanished from its source.
    """

    origin: str
    version: int


class VersionLedger(Protocol):
    """Atomic per-document operations; ``namespace`` is the collection the fence applies to."""

    def get(self, doc_id: str) -> LedgerRecord | None: ...

    def decide(self, doc_id: str, version: int, content_hash: str) -> Decision: ...

    def commit(self, doc_id: str, version: int, content_hash: str, writer: str, chunk_count: int) -> Decision: ...

    def tombstone(self, doc_id: str, version: int, writer: str) -> Decision: ...

    def records(self) -> Iterator[tuple[str, LedgerRecord]]:
        """(doc_id, record) for every record of the namespace, tombstones included."""
        ...

    def delete_namespace(self) -> int:
        """Remove the namespace's records and provenance (a retired collection's); returns records removed."""
        ...

    def record_provenance(self, source_id: str, entries: dict[str, Provenance]) -> None: ...

    def provenance(self, source_id: str) -> dict[str, Provenance]: ...

    def forget_provenance(self, source_id: str, doc_ids: list[str]) -> None: ...

    def close(self) -> None: ...
