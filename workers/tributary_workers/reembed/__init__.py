"""Blue-green re-embedding: the data plane of an EmbeddingIndex's copy steps (backfill, catchup; contract.reembed)."""
