"""Embedding backends on the same chunks, in one run: chunks/s and agreement with the baseline.

The baseline is sentence-transformers' fp32 PyTorch ``encode``; each other path (ONNX Runtime
fp32, and int8 with --int8) embeds the same chunks. Agreement: mean cosine between a path's
vectors and the baseline's, and top-10 overlap for queries over the corpus (each query's ten
nearest chunks by the baseline's vectors against the path's own). Padding fractions are those of
batches in arrival order and of length-bucketed batches.

    python bench/embed_backends.py [--corpus DIR] [--chunks N] [--batch-size 32] [--repeats 3] [--int8]

The default corpus is this repository's docs/ and README (real prose, varied chunk lengths).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from tributary_workers.pipeline.bucketing import arrival_batches, length_batches, padding_fraction  # noqa: E402
from tributary_workers.pipeline.chunker import Chunker, ChunkerConfig  # noqa: E402
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig  # noqa: E402
from tributary_workers.pipeline.parsers import Parser  # noqa: E402
from tributary_workers.pipeline.sources import open_source  # noqa: E402
from tributary_workers.pipeline.threads import cgroup_cpu_limit, intra_op_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def corpus_chunks(root: str, embedder: Embedder) -> list[str]:
    chunker = Chunker.for_model_path(embedder.model_path, ChunkerConfig(), embedder.max_seq_length)
    source, parser = open_source(root), Parser()
    return [c.text for ref in source.list() for doc in parser.run(source.read(ref)).documents
            for c in chunker.run(doc) if c.text.strip()]


def timed(embedder: Embedder, texts: list[str], batch_size: int, repeats: int) -> tuple[float, np.ndarray]:
    best, vectors = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        parts = [embedder.run(texts[s:s + batch_size]) for s in range(0, len(texts), batch_size)]
        best = min(best, time.perf_counter() - started)
        vectors = np.concatenate(parts)
    return len(texts) / best, vectors


def top10_overlap(base_docs: np.ndarray, base_q: np.ndarray, docs: np.ndarray, queries: np.ndarray) -> float:
    k = min(10, len(base_docs))
    want = np.argsort(-(base_q @ base_docs.T), axis=1)[:, :k]
    got = np.argsort(-(queries @ docs.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got)]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(ROOT / "docs"), help="folder of documents (default: docs/)")
    p.add_argument("--chunks", type=int, default=0, help="use the first N chunks (0: all)")
    p.add_argument("--queries", type=int, default=40, help="queries: the opening words of evenly spaced chunks")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="best of N alternating rounds")
    p.add_argument("--int8", action="store_true", help="also measure ONNX dynamic int8")
    args = p.parse_args()

    base = Embedder(EmbedderConfig(batch_size=args.batch_size, device="cpu"))
    base.warm_up()
    texts = corpus_chunks(args.corpus, base)
    if args.chunks:
        texts = texts[:args.chunks]
    step = max(1, len(texts) // args.queries)
    queries = [" ".join(t.split()[:8]) for t in texts[::step][:args.queries]]
    lengths = [len(ids) for ids in base.tokenizer(texts, truncation=True, max_length=base.max_seq_length)["input_ids"]]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} host CPUs, "
          f"cgroup limit {cgroup_cpu_limit() or 'none'}, intra-op threads {intra_op_threads()}")
    print(f"corpus: {len(texts)} chunks from {args.corpus}, {len(queries)} queries, mean {np.mean(lengths):.0f} "
          f"tokens (max {max(lengths)}), batch {args.batch_size}, best of {args.repeats} alternating rounds")
    print(f"padding fraction: {padding_fraction(lengths, arrival_batches(len(texts), args.batch_size)):.3f} in arrival "
          f"order, {padding_fraction(lengths, length_batches(lengths, args.batch_size)):.3f} length-bucketed "
          f"(per model call of {args.batch_size})")

    paths = [("torch fp32 encode (baseline)", base)]
    paths.append(("onnx fp32, bucketed", Embedder(EmbedderConfig(batch_size=args.batch_size, device="cpu", backend="onnx"))))
    if args.int8:
        paths.append(("onnx int8, bucketed", Embedder(EmbedderConfig(batch_size=args.batch_size, device="cpu",
                                                                     backend="onnx", quantize="int8"))))
    for _, embedder in paths:
        embedder.warm_up()
    # Alternating rounds, best of each: a shared machine's load hits every path alike.
    rates = {name: 0.0 for name, _ in paths}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, embedder in paths:
            rate, vectors[name] = timed(embedder, texts, args.batch_size, 1)
            rates[name] = max(rates[name], rate)
    base_name = paths[0][0]
    base_docs, base_q = vectors[base_name], base.run(queries)
    print(f"{'path':32} {'chunks/s':>9} {'x base':>7} {'cosine':>7} {'top-10':>7}")
    for name, embedder in paths:
        docs, q = vectors[name], embedder.run(queries)
        cosine = float(np.mean(np.sum(docs * base_docs, axis=1)))
        overlap = top10_overlap(base_docs, base_q, docs, q)
        print(f"{name:32} {rates[name]:9.1f} {rates[name] / rates[base_name]:7.2f} {cosine:7.4f} {overlap:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
