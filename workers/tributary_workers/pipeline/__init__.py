"""The pipeline stages every path shares: sources -> parsers -> chunker -> embedder -> writer, driven by the indexer."""
