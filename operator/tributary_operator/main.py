"""`tributary operator`: run the kopf operator (also `kopf run -m tributary_operator.handlers`)."""

from __future__ import annotations

import argparse

import kopf


def run(args: argparse.Namespace) -> int:
    from . import handlers  # noqa: F401  (registers the handlers)
    from . import metrics

    metrics.serve(args.metrics_port)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    kopf.run(
        standalone=True,  # one operator instance per cluster (a Deployment with replicas 1)
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0
