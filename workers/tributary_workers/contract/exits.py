"""Exit codes of every entry point, and what the operator reads from them.

A worker that exits EXIT_PERMANENT hit an error no retry can fix (bad settings, a model that is not
the one the spec names, an incompatible collection): the operator's podFailurePolicy fails that
shard at once instead of spending its retries. EXIT_FATAL is everything else (Milvus or Redis
unreachable, say), retried with back-off.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PERMANENT = 2  # also argparse's usage errors
EXIT_PARTIAL = 3  # some documents failed; the CLI's default (workers in Jobs are told to exit 0)
EXIT_INTERRUPTED = 130
