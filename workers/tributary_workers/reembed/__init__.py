"""Blue-green re-embedding of an EmbeddingIndex: the steps tributary-index-admin runs (contract.reembed): backfill, catchup, validate, swap, retire."""
