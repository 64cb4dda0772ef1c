"""The streaming worker's pure decisions: collapsing a batch, when to dead-letter, latency."""

from __future__ import annotations

from collections.abc import Sequence

from tributary_workers.streaming.events import Event
from tributary_workers.streaming.queue import Entry, id_ms


def collapse(items: Sequence[tuple[Entry, Event]]) -> tuple[list[tuple[Entry, Event]], list[tuple[Entry, Event]]]:
    """Keep one event per document: the highest version, the first one among equal versions
    (what one-by-one processing would leave, since the ledger lets the first of a version win).

    Returns (kept in stream order, superseded)."""
    best: dict[str, int] = {}
    for position, (_, event) in enumerate(items):
        kept = best.get(event.doc_id)
        if kept is None or event.version > items[kept][1].version:
            best[event.doc_id] = position
    winners = set(best.values())
    kept = [item for position, item in enumerate(items) if position in winners]
    superseded = [item for position, item in enumerate(items) if position not in winners]
    return kept, superseded


def exhausted_deliveries(deliveries: int, max_deliveries: int) -> bool:
    """Delivered more often than allowed without ever being acknowledged: don't try again."""
    return deliveries > max_deliveries


def dead_letter_after_failure(deliveries: int, max_deliveries: int, transient: bool) -> bool:
    """After a failure: dead-letter now (a per-document failure, or the last allowed delivery),
    or leave the entry pending for a later delivery."""
    return not transient or deliveries >= max_deliveries


def latency_seconds(event: Event, entry_id: str, now_ns: int) -> float:
    """From produced_at (else the stream entry's own timestamp) to now; never negative."""
    produced = event.produced_at if event.produced_at is not None else id_ms(entry_id) * 1_000_000
    return max(0.0, (now_ns - produced) / 1e9)


def dead_letter_cause(reason: str) -> str:
    if reason.startswith("invalid event"):
        return "invalid"
    if reason.startswith("delivered "):
        return "deliveries"
    if reason.startswith("failed on delivery"):
        return "transient"
    return "document"


# Redis error replies that pass on their own: a replica promoted after failover (READONLY on the old
# primary), memory full until consumers catch up and trimming frees it (OOM), a restart loading its
# dataset (LOADING), a long script (BUSY, not BUSYGROUP), a replica without its primary (MASTERDOWN),
# cluster resharding (TRYAGAIN, CLUSTERDOWN), a blocked XREADGROUP released by a role change
# (UNBLOCKED). Anything else (WRONGTYPE, a syntax error) is a bug.
TRANSIENT_REDIS_REPLIES = ("READONLY ", "OOM ", "LOADING ", "BUSY ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN ",
                           "UNBLOCKED ")
# redis-py strips the code of the replies it maps to its own classes: those are told by the class.
TRANSIENT_REDIS_ERRORS = ("ReadOnlyError", "OutOfMemoryError", "BusyLoadingError")


def transient_redis_reply(message: str, error_class: str = "ResponseError") -> bool:
    """Whether a Redis error reply is worth retrying: its code (the reply's first word), or the
    redis-py class it was mapped to."""
    return error_class in TRANSIENT_REDIS_ERRORS or (message.strip() + " ").startswith(TRANSIENT_REDIS_REPLIES)


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Delay before retry number attempt (1, 2, ...): initial_s doubling each time, capped at max_s."""
    return min(max_s, initial_s * 2 ** max(0, attempt - 1))


def warm_up_expired(elapsed_s: float, timeout_s: float) -> bool:
    """Whether warm-up gives up retrying: after timeout_s; never with timeout_s 0 (wait forever)."""
    return timeout_s > 0 and elapsed_s >= timeout_s
