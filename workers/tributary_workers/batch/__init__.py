"""The batch path: a checkpointed, sharded worker (one shard per Indexed Job completion index)."""
