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
    if args.leader_election:
        from tributary_operator import kube, leader

        kube.load_config()
        leader.hold_leadership(args.namespace)  # blocks while another instance is active
    kopf.run(
        standalone=True,  # kopf's own peering off: one active instance is ensured by the Lease above
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
