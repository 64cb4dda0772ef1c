"""`tributary calibrate`, `tributary cost` and `tributary plan`: the cost model's commands.

Thin: they parse flags, start the local servers a calibration measures, and print what the
tributary_workers.cost package computes (docs/cost.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tributary_workers.cli.args import (
    EXIT_OK,
    FatalError,
    add_chunking_options,
    index_name,
    positive_int,
)
from tributary_workers.contract import defaults

DEFAULT_STRATEGIES = {"pure_streaming": 0.0, "hybrid": "bulk"}


def non_negative(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0 or number != number:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return number


def fraction(value: str) -> float:
    number = non_negative(value)
    if number > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def strategy(value: str) -> tuple[str, str | float]:
    name, _, share = value.partition("=")
    if not name or not share:
        raise argparse.ArgumentTypeError(f"use NAME=BATCH_SHARE (0-1, or 'bulk'), got {value!r}")
    return name, share if share == "bulk" else fraction(share)


def add_cost_commands(commands) -> None:
    from tributary_workers.cost.inputs import USER_INPUTS

    calibrate = commands.add_parser("calibrate", help="measure the cost model's rates on this machine")
    calibrate.add_argument("-o", "--output", type=Path, default=Path("calibration.json"), help="calibration file to write")
    calibrate.add_argument("--label", default="", help="what the machine is, recorded in the file")
    calibrate.add_argument("--sample-chunks", type=positive_int, default=128,
                           help="chunks embedded per batch size and round")
    calibrate.add_argument("--rounds", type=positive_int, default=3, help="rounds over the batch sizes; the best counts")
    calibrate.add_argument("--milvus-chunks", type=positive_int, default=2048, help="rows written per write mode")
    calibrate.add_argument("--redis-events", type=positive_int, default=2000, help="events through the queue")
    calibrate.add_argument("--idle-seconds", type=non_negative, default=20.0, help="idle window of the worker")
    calibrate.add_argument("--batch-sizes", default="1,4,16", help="streaming batch sizes, comma-separated")
    calibrate.add_argument("--embed-batch-size", type=positive_int, default=defaults.BATCH_EMBED_BATCH_SIZE,
                           help="the batch path's batch size")
    calibrate.add_argument("--device", action="append", choices=["cpu", "cuda"],
                           help="devices to measure (default: cpu, and cuda when present)")
    calibrate.add_argument("--json", action="store_true", help="print the calibration on stdout")

    cost = commands.add_parser("cost", help="daily cost of pure streaming vs hybrid (or your own mix)")
    for spec in USER_INPUTS:
        kind = fraction if spec.name == "bulk_fraction" else non_negative
        default_text = "from the calibration" if spec.default is None else spec.default
        cost.add_argument(spec.flag, dest=spec.name, type=kind, metavar=spec.unit.split("/")[0].upper().replace(" ", "_"),
                          help=f"{spec.help} [{spec.unit}; default {default_text}]")
    add_model_options(cost)
    cost.add_argument("--corpus", metavar="DIR", help="measure chunks per document on a sample of this corpus")
    cost.add_argument("--scale-to-zero", action="store_true", help="stream workers scale to zero (--min-replicas 0)")
    cost.add_argument("--strategy", action="append", type=strategy, metavar="NAME=BATCH_SHARE",
                      help="a strategy: the share of documents sent through the nightly batch (0-1, or 'bulk'); "
                           "repeatable; default pure_streaming=0 and hybrid=bulk")
    cost.add_argument("--plot", type=Path, metavar="FILE", help="write cost vs daily volume to FILE.png or FILE.svg")
    cost.add_argument("--json", action="store_true", help="one JSON object: each strategy's terms, totals, difference")

    plan = commands.add_parser("plan", help="what an ingest (or an IngestionJob) would do and cost; writes nothing")
    plan.add_argument("source", nargs="*", metavar="SOURCE", help="as for `tributary ingest`")
    plan.add_argument("-f", "--filename", type=Path, metavar="FILE", help="an IngestionJob manifest (YAML)")
    plan.add_argument("--index", type=index_name, help="the index (collection) name (local mode)")
    plan.add_argument("--include", action="append", default=[], metavar="GLOB")
    plan.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    plan.add_argument("--parallelism", type=positive_int, help="worker pods (default 1, or the manifest's)")
    plan.add_argument("--embed-batch-size", type=positive_int, help="chunks per model call")
    plan.add_argument("--bulk-load", action="store_true", help="an initial load (index built at the end)")
    plan.add_argument("--ledger", metavar="URL", help="ledger to ask (default: the local one under --home; "
                      "for a manifest, a redis:// URL of its ledger)")
    plan.add_argument("--sample", type=positive_int, default=50, help="documents tokenised to estimate chunks")
    add_chunking_options(plan)
    add_model_options(plan, prices=True)
    plan.add_argument("--json", action="store_true", help="the plan as one JSON object")


def add_model_options(parser, prices: bool = False) -> None:
    parser.add_argument("--calibration", metavar="FILE", help="a calibration file (default: the shipped reference)")
    parser.add_argument("--stream-device", choices=["cpu", "gpu"], default="cpu", help="device of stream workers")
    parser.add_argument("--batch-device", choices=["cpu", "gpu"], default="cpu", help="device of batch workers")
    parser.add_argument("--gpu-throughput", metavar="BATCH=RATE,...",
                        help="GPU chunks/s by batch size, when the calibration has no GPU figures")
    for name, flag, default in (("price_core_hour", "--core-hour", 0.04), ("price_gpu_hour", "--gpu-hour", 2.5),
                                ("price_memory_gb_hour", "--memory-gb-hour", 0.005)):
        if prices:  # `cost` has them among its inputs
            parser.add_argument(flag, dest=name, type=non_negative, help=f"price (default {default})")


def _inputs(args, values: dict, overridden: dict | None = None):
    from tributary_workers.cost import calibration as cal
    from tributary_workers.cost.inputs import build_inputs, parse_curve

    calibration, source = cal.load(args.calibration)
    try:
        points = parse_curve(args.gpu_throughput) if args.gpu_throughput else None
    except ValueError as exc:
        raise FatalError(f"--gpu-throughput: {exc}") from None
    inputs = build_inputs(values, calibration, source, stream_gpu=args.stream_device == "gpu",
                          batch_gpu=args.batch_device == "gpu", gpu_points=points, overridden=overridden)
    return calibration, source, inputs


# -- calibrate ---------------------------------------------------------------------------------


def _calibrate(args) -> int:
    from tributary_workers.cost.calibration import Calibrator, CalibratorConfig
    from tributary_workers.localservers import start_milvus, start_redis

    try:
        sizes = tuple(positive_int(s) for s in args.batch_sizes.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise FatalError(f"--batch-sizes: not a list of positive integers: {args.batch_sizes!r}") from None
    with tempfile.TemporaryDirectory(prefix="tributary-calibrate-") as tmp:
        tmp = Path(tmp)
        milvus = start_milvus(tmp / "milvus")
        redis = None
        try:
            redis = start_redis(tmp / "redis")
            worker = [sys.executable, "-m", "tributary_workers.cli.stream_worker", "--index", "calibration_idle",
                      "--redis-url", redis.url, "--milvus-uri", milvus.uri, "--ledger", str(tmp / "ledger.sqlite")]
            if args.model:
                worker += ["--model", args.model]
            calibrator = Calibrator(CalibratorConfig(
                milvus_uri=milvus.uri, milvus_pid=milvus.proc.pid, redis_url=redis.url, redis_pid=redis.proc.pid,
                worker_argv=worker, label=args.label, model=args.model, devices=tuple(args.device or ()),
                stream_batch_sizes=sizes, batch_size=args.embed_batch_size, sample_chunks=args.sample_chunks,
                rounds=args.rounds,
                milvus_chunks=args.milvus_chunks, redis_events=args.redis_events, idle_seconds=args.idle_seconds))
            calibrator.warm_up()
            result = calibrator.run()
        finally:
            milvus.stop()
            if redis is not None:
                redis.stop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(result.to_json())
    if args.json:
        print(result.to_json(), end="")
        return EXIT_OK
    for device, figures in result.embedding.items():
        rates = ", ".join(f"batch {b}: {r:.1f}" for b, r in sorted(figures["chunks_per_s"].items()))
        print(f"embedding on {device}: {rates} chunks/s")
    m = result.milvus
    print(f"Milvus ({m['measured']}): stream upsert {m['stream_upsert_cpu_s_per_chunk'] * 1e3:.2f} ms/chunk, "
          f"batch upsert {m['batch_upsert_cpu_s_per_chunk'] * 1e3:.2f}, bulk insert "
          f"{m['bulk_insert_cpu_s_per_chunk'] * 1e3:.2f} + index build {m['index_build_cpu_s_per_chunk'] * 1e3:.2f}")
    w = result.worker
    print(f"worker: cold start {w['start_s']} s, idle {w['idle_cpu_cores']} cores, {w['idle_rss_gb']} GB resident")
    print(f"wrote {args.output} ({result.label}, {result.measured_at})")
    return EXIT_OK


# -- cost --------------------------------------------------------------------------------------


def _cost(args) -> int:
    from tributary_workers.cost.inputs import USER_INPUTS
    from tributary_workers.cost.model import compare, share_of

    values = {spec.name: getattr(args, spec.name) for spec in USER_INPUTS}
    overridden = {}
    if args.scale_to_zero:
        values["min_replicas"], overridden["min_replicas"] = 0.0, "input: --scale-to-zero"
    if args.corpus:
        if args.chunks_per_doc is not None:
            raise FatalError("give --chunks-per-doc or --corpus, not both")
        values["chunks_per_doc"], overridden["chunks_per_doc"] = _chunks_per_doc(args), f"measured: --corpus {args.corpus}"
    calibration, source, inputs = _inputs(args, values, overridden)
    strategies = dict(args.strategy) if args.strategy else dict(DEFAULT_STRATEGIES)
    if len(strategies) < 2 and args.plot:
        raise FatalError("--plot compares two strategies: give at least two --strategy")
    results = compare({name: share_of(share, inputs["bulk_fraction"]) for name, share in strategies.items()}, inputs)
    even = None
    if args.plot:
        from tributary_workers.cost.plot import plot

        try:
            even = plot(args.plot, strategies, inputs,
                        f"{inputs['bulk_fraction']:.0%} bulk, {inputs['chunks_per_doc']:g} chunks/doc; {source}")
        except ValueError as exc:
            raise FatalError(str(exc)) from None
    from tributary_workers.cli.cost_output import print_cost_json, print_cost_table

    if args.json:
        print_cost_json(results, inputs, calibration, source, args.plot, even)
    else:
        print_cost_table(results, inputs, source, args.plot, even)
    return EXIT_OK


def _chunks_per_doc(args) -> float:
    from tributary_workers.cost.planning import Planner, PlannerConfig

    planner = Planner(PlannerConfig(source=args.corpus, collection="cost", model=args.model, sample_size=200))
    try:
        plan = planner.run()
    finally:
        planner.close()
    if not plan.documents:
        raise FatalError(f"no documents in {args.corpus} to measure chunks per document on")
    return round(plan.chunks_to_write / plan.to_write, 2) if plan.to_write else 0.0


# -- plan --------------------------------------------------------------------------------------


def _plan(args) -> int:
    from tributary_workers.cli.cost_output import manifest_settings, print_plan
    from tributary_workers.cost.model import estimate_run
    from tributary_workers.cost.planning import Planner, PlannerConfig
    from tributary_workers.pipeline.chunker import ChunkerConfig

    if args.filename and args.source:
        raise FatalError("give a SOURCE or -f MANIFEST, not both")
    if args.filename:
        settings = manifest_settings(args.filename)
        ledger_url = args.ledger
    elif args.source:
        if not args.index:
            raise FatalError("--index is required with a SOURCE")
        settings = {"source": args.source if len(args.source) > 1 else args.source[0], "collection": args.index,
                    "include": args.include, "exclude": args.exclude, "parallelism": 1,
                    "embed_batch_size": defaults.BATCH_EMBED_BATCH_SIZE, "initial_load": args.bulk_load,
                    "max_tokens": args.max_tokens, "overlap_tokens": args.overlap_tokens}
        ledger_url = args.ledger or str(args.home / "ledger.sqlite")
    else:
        raise FatalError("give a SOURCE (as for `tributary ingest`) or -f an IngestionJob manifest")
    parallelism = args.parallelism or settings["parallelism"]
    batch_size = args.embed_batch_size or settings["embed_batch_size"]
    planner = Planner(PlannerConfig(
        source=settings["source"], collection=settings["collection"], include=settings["include"],
        exclude=settings["exclude"], ledger_url=ledger_url, sample_size=args.sample, model=args.model,
        chunking=ChunkerConfig(max_tokens=settings["max_tokens"], overlap_tokens=settings["overlap_tokens"])))
    try:
        plan = planner.run()
    finally:
        planner.close()
    values = {"price_core_hour": args.price_core_hour, "price_gpu_hour": args.price_gpu_hour,
              "price_memory_gb_hour": args.price_memory_gb_hour}
    calibration, source, x = _inputs(args, values)
    gpu = args.batch_device == "gpu"
    write = x["bulk_insert_cpu_s_per_chunk"] if settings["initial_load"] else x["batch_upsert_cpu_s_per_chunk"]
    estimate = estimate_run(plan.chunks_to_write, parallelism, x.batch_curve.at(batch_size), x["worker_start_s"],
                            write, x["index_build_cpu_s_per_chunk"], x.worker_price_per_hour(gpu),
                            x["price_core_hour"], deferred_index=settings["initial_load"])
    print_plan(plan, estimate, settings, parallelism, batch_size, x, source, args.json)
    return EXIT_OK


COST_COMMANDS = {"calibrate": _calibrate, "cost": _cost, "plan": _plan}
