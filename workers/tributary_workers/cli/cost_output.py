"""What `tributary cost` and `tributary plan` print: rich tables, or one JSON object; manifest reading."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tributary_workers.cli.args import FatalError
from tributary_workers.contract import defaults

RESERVED = ("inputs", "calibration", "difference", "break_even_docs_per_day", "notes", "curves")


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def _figure_json(x) -> dict:
    return {name: {"value": f.value, "unit": f.unit, "source": f.source} for name, f in x.figures.items()}


def print_cost_json(results, x, calibration, source, plot_path, even) -> None:
    out: dict = {}
    for result in results:
        if result.name in RESERVED:
            raise FatalError(f"a strategy cannot be named {result.name!r}")
        out[result.name] = {
            "batch_share": result.batch_share,
            "terms": [{"name": t.name, "per_day": round(t.per_day, 6), "quantity": round(t.quantity, 6),
                       "unit": t.unit, "uses": list(t.uses)} for t in result.terms],
            "total_per_day": round(result.total_per_day, 6),
        }
    if len(results) >= 2:
        first, second = results[0], results[1]
        delta = second.total_per_day - first.total_per_day
        out["difference"] = {
            "of": f"{second.name} - {first.name}", "per_day": round(delta, 6), "per_year": round(delta * 365, 2),
            "relative": round(delta / first.total_per_day, 6) if first.total_per_day else None,
        }
    out["break_even_docs_per_day"] = round(even, 1) if even is not None else None
    out["inputs"] = _figure_json(x)
    out["curves"] = {"stream": {"chunks_per_s": {str(k): v for k, v in x.stream_curve.points.items()},
                                "source": x.stream_curve.source},
                     "batch": {"chunks_per_s": {str(k): v for k, v in x.batch_curve.points.items()},
                               "source": x.batch_curve.source}}
    out["calibration"] = {"source": source, "label": calibration.label, "measured_at": calibration.measured_at,
                          "machine": calibration.machine}
    out["notes"] = sorted({note for r in results for note in r.notes})
    if plot_path:
        out["plot"] = str(plot_path)
    print(json.dumps(out, indent=2))


def print_cost_table(results, x, source, plot_path, even) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"daily cost, {x['docs_per_day']:,.0f} documents/day, {x['bulk_fraction']:.0%} bulk")
    table.add_column("term")
    for result in results:
        table.add_column(f"{result.name}\n(batch share {result.batch_share:.0%})", justify="right")
    table.add_column("figures used", overflow="fold")
    for row, term in enumerate(results[0].terms):
        cells = [f"${r.terms[row].per_day:,.4f}\n{r.terms[row].quantity:,.3f} {r.terms[row].unit}" for r in results]
        table.add_row(term.name, *cells, ", ".join(term.uses))
    table.add_section()
    table.add_row("total per day", *[f"[bold]${r.total_per_day:,.2f}[/bold]" for r in results], "")
    console.print(table)
    if len(results) >= 2:
        first, second = results[0], results[1]
        delta = second.total_per_day - first.total_per_day
        relative = f" ({delta / first.total_per_day:+.1%})" if first.total_per_day else ""
        console.print(f"{second.name} - {first.name}: ${delta:+,.2f}/day{relative}, ${delta * 365:+,.0f}/year")
    if plot_path:
        where = f"break-even at {even:,.0f} documents/day" if even is not None else "no break-even in range"
        console.print(f"plot: {plot_path} ({where})")
    figures = Table(title="figures (value, unit, source)")
    for column in ("figure", "value", "unit", "source"):
        figures.add_column(column, justify="right" if column == "value" else "left")
    for name, f in x.figures.items():
        figures.add_row(name, f"{f.value:,.6g}", f.unit, f.source)
    for label, curve in (("stream_curve", x.stream_curve), ("batch_curve", x.batch_curve)):
        points = ", ".join(f"{b}: {r:,.1f}" for b, r in sorted(curve.points.items()))
        figures.add_row(label, points, "chunks/s by batch size", curve.source)
    console.print(figures)
    for note in sorted({note for r in results for note in r.notes}):
        console.print(f"note: {note}")


# -- plan --------------------------------------------------------------------------------------


def manifest_settings(path: Path) -> dict:
    """The settings `plan` needs from an IngestionJob manifest (read as plain YAML)."""
    import yaml

    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as exc:
        raise FatalError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise FatalError(f"{path} is not YAML: {str(exc).splitlines()[0]}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise FatalError(f"{path} must hold exactly one IngestionJob, found {len(documents)} documents")
    manifest = documents[0]
    kind, api = manifest.get("kind"), str(manifest.get("apiVersion", ""))
    if kind != "IngestionJob" or not api.startswith("tributary.dev/"):
        raise FatalError(f"{path} is a {kind or 'manifest without a kind'} ({api or 'no apiVersion'}), "
                         "not a tributary.dev IngestionJob")
    spec = manifest.get("spec") or {}
    source = spec.get("source") or {}
    target = spec.get("target") or {}
    if not (source.get("uri") or source.get("urls")):
        raise FatalError(f"{path}: spec.source has neither uri nor urls")
    chunking = (target.get("inline") or {}).get("chunking") or {}
    return {
        "name": (manifest.get("metadata") or {}).get("name", "?"),
        "source": source.get("urls") or source["uri"],
        "source_type": source.get("type", "local"),
        "collection": (target.get("inline") or {}).get("collection") or (target.get("indexRef") or {}).get("name")
        or "unknown",
        "include": source.get("include") or [], "exclude": source.get("exclude") or [],
        "parallelism": int(spec.get("parallelism", defaults.PARALLELISM)),
        "embed_batch_size": int(spec.get("embedBatchSize", defaults.BATCH_EMBED_BATCH_SIZE)),
        "initial_load": spec.get("mode") == "initialLoad",
        "max_tokens": chunking.get("maxTokens"),
        "overlap_tokens": int(chunking.get("overlapTokens", defaults.OVERLAP_TOKENS)),
        "ledger_in_spec": bool(spec.get("ledger")),
    }


def print_plan(plan, estimate, settings, parallelism, batch_size, x, source, as_json) -> None:
    run = {"parallelism": parallelism, "embed_batch_size": batch_size, "initial_load": settings["initial_load"],
           "chunks_to_embed": round(estimate.chunks), "wall_s": round(estimate.wall_s, 1),
           "worker_hours": round(estimate.worker_hours, 4), "milvus_core_hours": round(estimate.milvus_core_hours, 5),
           "cost": round(estimate.cost, 4), "throughput_chunks_per_s": round(x.batch_curve.at(batch_size), 2),
           "worker_start_s": x["worker_start_s"], "calibration": source}
    if as_json:
        print(json.dumps({"source": str(settings["source"]), "collection": settings["collection"],
                          "plan": plan.to_dict(), "run": run, "written": False}, indent=2))
        return
    from rich.table import Table

    console = _console()
    console.print(f"source {settings['source']} -> index {settings['collection']}: {plan.files} files, "
                  f"{plan.bytes:,} bytes")
    types = Table("type", "files", "bytes")
    for kind, counts in sorted(plan.by_type.items()):
        types.add_row(kind, str(counts["files"]), f"{counts['bytes']:,}")
    console.print(types)
    console.print(f"documents: {plan.documents} parsed; {plan.to_write} to write, {plan.unchanged} unchanged "
                  f"(skipped), {plan.superseded} superseded, {plan.failed} would fail (ledger: {plan.ledger})")
    if settings.get("ledger_in_spec") and plan.ledger == "none":
        console.print("  the manifest's ledger is not consulted: pass --ledger redis://... to count unchanged")
    for failure in plan.failures[:5]:
        console.print(f"  would fail: {failure['doc_id']}: {failure['reason']}")
    console.print(f"chunks to embed: ~{estimate.chunks:,.0f} ({plan.sampled} files tokenised, the rest estimated)")
    console.print(f"run: {parallelism} worker(s), batch {batch_size} at {run['throughput_chunks_per_s']} chunks/s "
                  f"each -> about {_duration(estimate.wall_s)} wall time (cold start {x['worker_start_s']:.0f} s"
                  f"{', index build at the end' if settings['initial_load'] else ''}); "
                  f"{estimate.worker_hours:.3f} worker-hours, ${estimate.cost:,.4f}")
    console.print(f"rates from {source}. Nothing was written.")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
