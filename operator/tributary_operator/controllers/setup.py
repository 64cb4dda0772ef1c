"""Operator-wide kopf settings and the liveness probe."""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from tributary_operator import kube
from tributary_operator.api.v1alpha1 import GROUP

DOMAIN = GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping stays under our domain and out of the user-facing status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=DOMAIN, key="last-handled-configuration")
    settings.persistence.finalizer = f"{DOMAIN}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10]
    kube.load_config()


@kopf.on.probe(id="now")
def liveness_probe(**_: Any) -> float:
    return time.time()
