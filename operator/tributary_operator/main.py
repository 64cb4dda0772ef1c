"""`tributary-operator`: run the kopf operator (also `kopf run -m tributary_operator.controllers`)."""

from __future__ import annotations

import argparse
import sys

import kopf

from tributary_operator.options import add_operator_options


def run(args: argparse.Namespace) -> int:
    from tributary_operator import controllers, metrics  # noqa: F401  (importing registers the handlers)

    metrics.serve(args.metrics_port)
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    kopf.run(
        standalone=True,  # one operator instance per cluster (a Deployment with replicas 1)
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_operator_options(argparse.ArgumentParser(
        prog="tributary-operator", description="The Tributary Kubernetes operator (kopf)."))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
