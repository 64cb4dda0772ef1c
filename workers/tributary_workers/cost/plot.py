"""Daily cost against daily volume for each strategy, the break-even point marked (PNG or SVG).

matplotlib is an optional dependency (`pip install 'tributary[plot]'`): workers never plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tributary_workers.cost.model import (
    Inputs,
    break_even,
    cost_strategy,
    share_of,
    with_figure,
)

FORMATS = (".png", ".svg")


def volumes_around(docs_per_day: float, points: int = 60) -> list[float]:
    """Log-spaced daily volumes from 1/100 to 100 times the given one (at least 10 to 10^6)."""
    low, high = max(1.0, min(docs_per_day / 100, 10.0)), max(docs_per_day * 100, 1e6)
    ratio = (high / low) ** (1 / (points - 1))
    return [low * ratio**i for i in range(points)]


def curves(strategies: Mapping[str, str | float], x: Inputs, volumes: Sequence[float]) -> dict[str, list[float]]:
    return {name: [cost_strategy(name, share_of(share, x["bulk_fraction"]),
                                 with_figure(x, "docs_per_day", v)).total_per_day for v in volumes]
            for name, share in strategies.items()}


def plot(path: Path, strategies: Mapping[str, str | float], x: Inputs, title: str) -> float | None:
    """Write the plot; returns the break-even volume (None when the curves do not cross)."""
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--plot must name a .png or .svg file, not {path.name!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'tributary[plot]'") from None
    volumes = volumes_around(x["docs_per_day"])
    lines = curves(strategies, x, volumes)
    even = break_even(strategies, x, volumes)
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    for name, costs in lines.items():
        axes.plot(volumes, costs, label=name, linewidth=2)
    if even is not None:
        first = next(iter(strategies.items()))
        cost = cost_strategy(first[0], share_of(first[1], x["bulk_fraction"]),
                             with_figure(x, "docs_per_day", even)).total_per_day
        axes.plot([even], [cost], "o", color="black")
        axes.annotate(f"break-even: {even:,.0f} docs/day", (even, cost), textcoords="offset points",
                      xytext=(-10, 10), ha="right")
    axes.axvline(x["docs_per_day"], color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("documents per day")
    axes.set_ylabel("infrastructure cost per day ($)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    if even is None:
        axes.text(0.02, 0.02, "no break-even in this range", transform=axes.transAxes, fontsize=9)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Date": None} if path.suffix.lower() == ".svg" else None)
    plt.close(figure)
    return even
