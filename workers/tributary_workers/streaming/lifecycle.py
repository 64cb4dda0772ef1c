"""The stream worker's process life cycle: SIGTERM/SIGINT drain, and a watchdog for a drain that hangs."""

from __future__ import annotations

import logging
import os
import signal
import threading

from tributary_workers.streaming.worker import StreamWorker

log = logging.getLogger(__name__)

EXIT_DRAIN_TIMEOUT = 1
WATCHDOG_GRACE_S = 1.0  # after the drain timeout; within contract.defaults.DRAIN_MARGIN_S of the pod's grace


def install_signal_handlers(worker: StreamWorker, drain_timeout_s: float | None = None) -> None:
    """SIGTERM/SIGINT: drain (stop reading, finish and acknowledge the batch in flight) and return;
    if draining outlasts drain_timeout_s, or a second signal comes, exit at once (what was in flight
    stays pending and is redelivered)."""
    timeout = worker.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s

    def force_exit(why: str) -> None:
        log.error("%s: exiting with entries in flight (they will be redelivered)", why)
        logging.shutdown()
        os._exit(EXIT_DRAIN_TIMEOUT)

    def handler(signum, frame) -> None:
        if worker.stopping:
            force_exit(f"second {signal.Signals(signum).name}")
        log.info("%s: draining (at most %.0fs)", signal.Signals(signum).name, timeout)
        worker.stop()
        watchdog = threading.Timer(timeout + WATCHDOG_GRACE_S, force_exit, args=(f"drain took longer than {timeout:.0f}s",))
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
