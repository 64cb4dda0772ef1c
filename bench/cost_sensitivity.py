"""The sensitivity table of docs/cost.md: which assumptions move the pure streaming vs hybrid answer.

Each row changes one input of the base case (10,000 documents/day, 90 % bulk, the shipped
calibration, default prices) and prints both daily totals and their difference, as Markdown.
Not a test. Usage: python bench/cost_sensitivity.py [--calibration FILE] [--gpu-throughput 1=150,...]
"""

from __future__ import annotations

import argparse
import sys

from tributary_workers.cost import calibration as cal
from tributary_workers.cost.inputs import build_inputs, parse_curve
from tributary_workers.cost.model import compare

# Not measured (the reference machine has no GPU): an assumed all-MiniLM-L6-v2 curve for a
# data-centre GPU, chunks of ~250 tokens. Replace it with `tributary calibrate` on a GPU machine.
ASSUMED_GPU = "1=150,4=550,16=1600,64=3000"

ROWS = [
    ("base case (CPU, 1 always-on stream worker)", {}, {}),
    ("bulk fraction 50 %", {"bulk_fraction": 0.5}, {}),
    ("bulk fraction 75 %", {"bulk_fraction": 0.75}, {}),
    ("bulk fraction 99 %", {"bulk_fraction": 0.99}, {}),
    ("scale to zero, updates all day", {"min_replicas": 0}, {}),
    ("scale to zero, updates 8 h a day in bursts of 5", {"min_replicas": 0, "active_hours": 8, "burst_size": 5}, {}),
    ("GPU stream and batch workers", {}, {"stream_gpu": True, "batch_gpu": True}),
    ("GPU batch workers, CPU stream workers", {}, {"batch_gpu": True}),
    ("GPU everywhere, scale to zero", {"min_replicas": 0}, {"stream_gpu": True, "batch_gpu": True}),
    ("1 chunk per document", {"chunks_per_doc": 1}, {}),
    ("16 chunks per document", {"chunks_per_doc": 16}, {}),
    ("no compaction rewrites", {"compaction_rewrites": 0}, {}),
    ("3 compaction rewrites", {"compaction_rewrites": 3}, {}),
    ("bulk bursts not scaled out (max replicas 1)", {"max_replicas": 1}, {}),
    ("100,000 documents/day", {"docs_per_day": 100_000}, {}),
    ("1,000,000 documents/day", {"docs_per_day": 1_000_000}, {}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", default=None)
    parser.add_argument("--gpu-throughput", default=ASSUMED_GPU)
    args = parser.parse_args()
    calibration, source = cal.load(args.calibration)
    gpu = parse_curve(args.gpu_throughput)
    print(f"<!-- {source}; GPU curve (assumed): {args.gpu_throughput} chunks/s by batch size -->")
    print("| change from the base case | pure streaming $/day | hybrid $/day | hybrid − pure | relative |")
    print("|---|---:|---:|---:|---:|")
    for label, values, devices in ROWS:
        x = build_inputs(values, calibration, source, gpu_points=gpu, **devices)
        pure, hybrid = compare({"pure_streaming": 0.0, "hybrid": x["bulk_fraction"]}, x)
        delta = hybrid.total_per_day - pure.total_per_day
        print(f"| {label} | {pure.total_per_day:,.2f} | {hybrid.total_per_day:,.2f} | {delta:+,.2f} | "
              f"{delta / pure.total_per_day:+.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
