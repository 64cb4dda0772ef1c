"""Tributary data plane: pipeline stages, version ledger, batch and streaming workers, the CLI."""
