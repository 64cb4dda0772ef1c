"""A progress bar on stderr for the local CLI (tqdm), fed by the batch worker's progress callback."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar: tqdm | None = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, report, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = tqdm(total=total, initial=0, unit="doc", file=sys.stderr, desc="ingest", leave=True)
        self._bar.set_postfix(chunks=report.chunks_written, failed=report.documents_failed, refresh=False)
        self._bar.n = min(report.documents_total, max(total, report.documents_total))
        self._bar.total = max(total, report.documents_total)
        self._bar.refresh()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
