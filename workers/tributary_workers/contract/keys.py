"""Redis keys and checkpoint keys both planes compute (the layout of shared state)."""

from __future__ import annotations

PREFIX = "tributary"
STREAM_PREFIX = f"{PREFIX}:stream"
ROUTING_PREFIX = f"{PREFIX}:routing"
LEDGER_PREFIX = f"{PREFIX}:ledger"
CHECKPOINT_PREFIX = f"{PREFIX}:checkpoint"
PROVENANCE_PREFIX = f"{PREFIX}:provenance"
BACKPRESSURE_PREFIX = f"{PREFIX}:backpressure"


def stream_key(index: str) -> str:
    """The event stream of an index (one field ``event``: the event's JSON)."""
    return f"{STREAM_PREFIX}:{index}"


def dead_letter_key(stream: str) -> str:
    return f"{stream}:dead"


def backpressure_key(stream: str) -> str:
    """The operator's backpressure record of a stream (contract.backpressure); it expires on its own."""
    return f"{BACKPRESSURE_PREFIX}:{stream}"


def routing_key(index: str) -> str:
    return f"{ROUTING_PREFIX}:{index}"


def applied_key(index: str) -> str:
    """Hash consumer -> routing generation it last applied."""
    return f"{ROUTING_PREFIX}:{index}:applied"


def generation_key(index: str) -> str:
    """Counter of routing generations (INCR); never deleted, so generations never restart."""
    return f"{ROUTING_PREFIX}:{index}:generation"


def repair_key(index: str, collection: str) -> str:
    """Hash doc_id -> newest version that a secondary target failed to write (catch-up drains it)."""
    return f"{ROUTING_PREFIX}:{index}:repair:{collection}"


def provenance_key(namespace: str, source_id: str) -> str:
    """Hash doc_id -> [origin, version]: what one source wrote into one collection (for pruning)."""
    return f"{PROVENANCE_PREFIX}:{{{namespace}}}:{source_id}"


def checkpoint_key(job_id: str, collection: str, shard_index: int, shard_count: int) -> str:
    """One shard's checkpoint: ``{run}/{collection}/shard-{i}-of-{n}``."""
    return f"{job_id}/{collection}/shard-{shard_index}-of-{shard_count}"


def redis_checkpoint_key(key: str) -> str:
    return f"{CHECKPOINT_PREFIX}:{key}"


def configmap_data_key(key: str) -> str:
    """ConfigMap keys allow [-._a-zA-Z0-9]: the slashes become dots."""
    return key.replace("/", ".")


def parse_shard(data_key: str) -> int | None:
    """The shard index of a checkpoint key in either form, or None when it is not one."""
    tail = data_key.replace("/", ".").rsplit(".", 1)[-1]
    if not tail.startswith("shard-"):
        return None
    try:
        return int(tail.split("-")[1])
    except (IndexError, ValueError):
        return None


def configmap_checkpoint_url(namespace: str, name: str) -> str:
    return f"configmap://{namespace}/{name}"
