"""The entry points: `tributary` (local mode and streaming commands) and the two container workers."""
