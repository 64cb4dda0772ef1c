"""Which routing generation a streaming worker may report as applied (see contract/routing.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tributary_workers.contract.routing import report_applied
from tributary_workers.errors import one_line

log = logging.getLogger(__name__)


class Generations:
    """The generation routed now, and the newest one whose targets all warmed up (the only one
    reported: an applied generation promises its targets take writes)."""

    def __init__(self) -> None:
        self.routed = 0
        self.applied: int | None = None
        self.reported: int | None = None

    def routed_to(self, generation: int, targets: Sequence) -> None:
        self.routed = generation
        self.note(targets)

    def note(self, targets: Sequence) -> None:
        if all(t.ready for t in targets):
            self.applied = self.routed

    def warm(self, targets: Sequence) -> None:
        """Warm every target up; one that fails is retried at the next tick or batch, and the
        generation waits for it."""
        for target in targets:
            try:
                target.warm_up()
            except Exception as exc:
                log.warning("routing target %s is not ready: %s", target.collection, one_line(exc))
        self.note(targets)

    def report(self, client, index: str, consumer: str, heartbeat: bool = False) -> None:
        """After a batch when it changed; at every maintenance tick (the timestamp says the worker
        is alive)."""
        if self.applied is not None and (heartbeat or self.applied != self.reported):
            report_applied(client, index, consumer, self.applied)
            self.reported = self.applied
