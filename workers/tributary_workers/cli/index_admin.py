"""Container entry point of an EmbeddingIndex's Milvus administration: `tributary-index-admin`.

The operator never talks to Milvus itself: what an EmbeddingIndex needs there runs as a Job with
this command. ``provision`` creates the index's first collection (declared index, metric and
replicas) and the alias pointing at it, or adopts the collection an existing alias serves when it
records the same model and dimension; it never repoints an alias. ``backfill`` and ``catchup`` are
a re-embedding's copy steps (cli/index_admin_reembed.py, tributary_workers.reembed), ``validate``,
``swap`` and ``retire`` its gates and cutover (cli/index_admin_gates.py). Their report is a
contract.reembed.StepReport; exit 0 also when it says ok=false.

Settings come as flags or TRIBUTARY_* variables (the Milvus token only from TRIBUTARY_MILVUS_TOKEN,
a Secret reference). The outcome is one JSON object on stdout and, with --report-file (the pod's
/dev/termination-log), there too, for the operator to read. Exit 0: provisioned or adopted; 2: the
alias serves something else (a Conflict, in the report) or a setting is wrong; 1: Milvus
unreachable (one line on stderr; the Job retries with back-off).
"""

from __future__ import annotations

import argparse
import sys

from tributary_workers.cli import index_admin_drift, index_admin_gates
from tributary_workers.cli.args import (
    EXIT_OK,
    Parser,
    add_milvus_index_options,
    add_model_options,
    from_env,
    index_name,
    require,
    worker_main,
)
from tributary_workers.cli.index_admin_reembed import register_reembed
from tributary_workers.contract import defaults
from tributary_workers.contract import env as ENV
from tributary_workers.contract.adoption import AdoptAction
from tributary_workers.contract.exits import EXIT_PERMANENT

PROG = "tributary-index-admin"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    provision = sub.add_parser("provision", help="create or adopt the alias' collection")
    provision.add_argument("--alias", type=index_name, default=from_env(ENV.ALIAS), help=f"env {ENV.ALIAS}")
    provision.add_argument("--collection", type=index_name, default=from_env(ENV.COLLECTION),
                           help=f"name of a new collection (env {ENV.COLLECTION})")
    provision.add_argument("--milvus-uri", default=from_env(ENV.MILVUS_URI), help=f"env {ENV.MILVUS_URI}")
    provision.add_argument("--report-file", default=from_env(ENV.REPORT_FILE),
                           help=f"also write the JSON outcome here, e.g. /dev/termination-log (env {ENV.REPORT_FILE})")
    add_model_options(provision, embed_batch_size=defaults.STREAM_EMBED_BATCH_SIZE)
    add_milvus_index_options(provision)
    provision.set_defaults(func=run_provision_step)
    register_reembed(sub)  # backfill, catchup
    index_admin_gates.register(sub)  # validate, swap, retire
    index_admin_drift.register(sub)  # the periodic check of the active collection
    return p


def model_dimension(args: argparse.Namespace) -> tuple[str, int]:
    """(model id, dimension): the dimension as declared, else read from the model (loaded locally)."""
    from tributary_workers.contract.encoder import encoder_id
    from tributary_workers.pipeline.embedder import (
        Embedder,
        EmbedderConfig,
        resolve_model,
    )

    _, base_id = resolve_model(args.model)
    model_id = encoder_id(base_id, args.backend, args.quantize)  # what the workers will record
    if args.dimension is not None:
        return model_id, args.dimension
    embedder = Embedder(EmbedderConfig(model=args.model, backend=args.backend, quantize=args.quantize))
    embedder.warm_up()
    return model_id, embedder.dimension


def run_provision_step(args: argparse.Namespace) -> int:
    import os

    from tributary_workers.pipeline.collections import provision as run_provision
    from tributary_workers.pipeline.writer import WriterConfig

    require(args, "--alias", "--collection", "--milvus-uri")
    model_id, dimension = model_dimension(args)
    config = WriterConfig(
        uri=args.milvus_uri, collection=args.collection, model_id=model_id, dimension=dimension,
        token=os.environ.get(ENV.MILVUS_TOKEN) or None, db_name=args.milvus_database,
        metric_type=args.metric_type, index_type=args.index_type, index_params=args.index_params,
        replicas=args.replicas,
    )
    outcome = run_provision(config, args.alias, args.dimension)
    text = outcome.to_json()
    print(text, flush=True)
    if args.report_file:
        with open(args.report_file, "w") as out:
            out.write(text)
    return EXIT_PERMANENT if outcome.action is AdoptAction.CONFLICT else EXIT_OK


def run(args: argparse.Namespace) -> int:
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    return worker_main(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
