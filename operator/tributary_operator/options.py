"""The operator's command-line options, kept free of kopf so the CLI can list them cheaply."""

from __future__ import annotations

import argparse
import os


def add_operator_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only this namespace (repeatable; default: the whole cluster)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("TRIBUTARY_METRICS_PORT", "9090")),
                        help="Prometheus /metrics port; 0 disables (env TRIBUTARY_METRICS_PORT)")
    parser.add_argument("--liveness", default=os.environ.get("TRIBUTARY_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="liveness endpoint URL served by kopf; empty disables")
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default="json",
                        help="log format; json gives structured logs (default)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-leader-election", dest="leader_election", action="store_false",
                        help="skip the Lease that keeps one active operator per watched scope (only for a "
                             "single instance you run by hand)")
    return parser
