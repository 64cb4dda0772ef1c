"""Leader election over Leases (see core/leadership.py for the rules).

`hold_leadership()` blocks until this instance holds every Lease of its scope, logging once that it
stands by and who holds them; then a daemon thread renews them. An instance that cannot renew
within the lease duration has lost leadership: it exits at once (as controller-runtime does), so
Kubernetes restarts it as a standby and two operators never act on one object.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

from prometheus_client import Gauge

from tributary_operator import kube
from tributary_operator.core import leadership

log = logging.getLogger("tributary.leader")
LEADER = Gauge("tributary_operator_leader", "1 while this instance is the active operator of its scope, 0 standing by",
               ["scope"])


def _try_all(locations: list[tuple[str, str]], me: str) -> str | None:
    """One pass over the Leases, in order; the holder blocking us, or None when we hold them all."""
    for namespace, name in locations:
        spec, version = kube.read_lease(namespace, name)
        decision = leadership.decide_lease(spec, me, datetime.now(UTC))
        if decision.action == "stand-by":
            return f"{decision.holder} (Lease {namespace}/{name})"
        if not kube.write_lease(namespace, name, decision.spec, version):
            return f"another instance (Lease {namespace}/{name} changed while we wrote it)"
        if decision.action == "take-over":
            log.info("took over Lease %s/%s from an instance that let it expire", namespace, name)
    return None


def hold_leadership(namespaces: list[str], poll_s: float = 2.0) -> None:
    me = leadership.identity(os.environ.get("POD_NAME"), socket.gethostname(), os.getpid())
    own = os.environ.get("POD_NAMESPACE") or "default"
    locations = leadership.lease_locations(namespaces, own)
    scope = leadership.scope_id(namespaces)
    LEADER.labels(scope).set(0)
    announced = None
    while (blocker := _try_all(locations, me)) is not None:
        if blocker != announced:
            log.warning("standing by: another operator is active for this scope, held by %s", blocker)
            announced = blocker
        time.sleep(poll_s)
    LEADER.labels(scope).set(1)
    log.info("leading as %s: holding %s", me, ", ".join(f"{ns}/{name}" for ns, name in locations))
    threading.Thread(target=_renew, args=(locations, me), name="lease-renewal", daemon=True).start()


def _renew(locations: list[tuple[str, str]], me: str) -> None:
    last_renewed = time.monotonic()
    while True:
        time.sleep(leadership.RENEW_EVERY_SECONDS)
        try:
            blocker = _try_all(locations, me)
        except Exception as exc:  # noqa: BLE001 - an API hiccup; the deadline below decides
            blocker = kube.error_text(exc)
        if blocker is None:
            last_renewed = time.monotonic()
        elif time.monotonic() - last_renewed > leadership.LEASE_SECONDS - leadership.RENEW_EVERY_SECONDS:
            log.error("lost leadership (%s): exiting so that a single operator stays active", blocker)
            logging.shutdown()
            os._exit(1)
