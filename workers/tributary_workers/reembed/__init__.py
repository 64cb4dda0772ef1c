"""Blue-green re-embedding, the data plane of an EmbeddingIndex's steps (contract.reembed): source, backfill, catchup."""
