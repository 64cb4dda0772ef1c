"""Embedding backends on the same chunks, in one run: chunks/s and agreement with the baseline.

The baseline is sentence-transformers' fp32 PyTorch ``encode`` on the chosen device; each other
path embeds the same chunks: on CPU ONNX Runtime fp32 (and int8 with --int8) and torch fed
directly (pipeline/direct.py); on CUDA torch fed directly in fp16, and the model alone (the same
fp16 forwards on batches already on the device: no tokenizing, no copies), the ceiling the direct
path is measured against. Agreement: mean cosine between a path's vectors and the baseline's, and
top-10 overlap for queries over the corpus (each query's ten nearest chunks by the baseline's
vectors against the path's own). Padding fractions are those of batches in arrival order and of
length-bucketed batches.

    python bench/embed_backends.py [--device cpu|cuda] [--corpus DIR] [--max-tokens N] [--chunks N]
                                   [--batch-size 32] [--call-size N] [--repeats 3] [--int8]

The default corpus is this repository's docs/ and README (real prose, varied chunk lengths);
--chunks above the corpus's count repeats it (a GPU needs tens of thousands to reach speed).
On a GPU: ``--device cuda --max-tokens 128 --chunks 50000 --batch-size 256``.
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


def corpus_chunks(root: str, embedder: Embedder, max_tokens: int | None) -> list[str]:
    chunker = Chunker.for_model_path(embedder.model_path, ChunkerConfig(max_tokens=max_tokens),
                                     embedder.max_seq_length)
    source, parser = open_source(root), Parser()
    return [c.text for ref in source.list() for doc in parser.run(source.read(ref)).documents
            for c in chunker.run(doc) if c.text.strip()]


def timed(embedder: Embedder, texts: list[str], call_size: int) -> tuple[float, np.ndarray]:
    """chunks/s and vectors, the texts handed over ``call_size`` at a time (as a worker does)."""
    started = time.perf_counter()
    parts = [embedder.run(texts[s:s + call_size]) for s in range(0, len(texts), call_size)]
    return len(texts) / (time.perf_counter() - started), np.concatenate(parts)


class ModelAlone:
    """The direct path's forwards on its own batches, prepared on the device beforehand."""

    def __init__(self, direct: Embedder, texts: list[str]):
        import torch

        self.encoder, self.count = direct._direct, len(texts)
        self.batches = [{name: t.to(self.encoder.device) for name, t in feed.items()}
                        for _, feed in self.encoder._batches(texts)]
        self.sync = torch.cuda.synchronize if self.encoder.device.type == "cuda" else (lambda: None)

    def run(self) -> float:
        import torch

        self.sync()
        started = time.perf_counter()
        with torch.inference_mode():
            for feed in self.batches:
                self.encoder.model(feed)["sentence_embedding"]
        self.sync()
        return self.count / (time.perf_counter() - started)


def top10_overlap(base_docs: np.ndarray, base_q: np.ndarray, docs: np.ndarray, queries: np.ndarray) -> float:
    k = min(10, len(base_docs))
    want = np.argsort(-(base_q @ base_docs.T), axis=1)[:, :k]
    got = np.argsort(-(queries @ docs.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got)]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--corpus", default=str(ROOT / "docs"), help="folder of documents (default: docs/)")
    p.add_argument("--max-tokens", type=int, default=None, help="chunk size in tokens (default: the model's limit)")
    p.add_argument("--chunks", type=int, default=0, help="N chunks: the first N, or the corpus repeated (0: all)")
    p.add_argument("--queries", type=int, default=40, help="queries: the opening words of evenly spaced chunks")
    p.add_argument("--batch-size", type=int, default=32, help="encode's batch size (the direct path's row cap)")
    p.add_argument("--call-size", type=int, default=0,
                   help="chunks per embedder call (0: the batch size on CPU, all of them on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="best of N alternating rounds")
    p.add_argument("--int8", action="store_true", help="also measure ONNX dynamic int8")
    args = p.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device == "cuda"
    call_size = args.call_size or (1 << 30 if on_gpu else args.batch_size)
    base = Embedder(EmbedderConfig(batch_size=args.batch_size, device=device, direct=False))
    base.warm_up()
    texts = corpus_chunks(args.corpus, base, args.max_tokens)
    if args.chunks:
        texts = (texts * (args.chunks // len(texts) + 1))[:args.chunks]
    step = max(1, len(texts) // args.queries)
    queries = [" ".join(t.split()[:8]) for t in texts[::step][:args.queries]]
    lengths = [len(ids) for ids in base.tokenizer(texts, truncation=True, max_length=base.max_seq_length)["input_ids"]]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} host CPUs, "
          f"cgroup limit {cgroup_cpu_limit() or 'none'}, intra-op threads {intra_op_threads()}")
    if on_gpu:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"corpus: {len(texts)} chunks from {args.corpus}, {len(queries)} queries, mean {np.mean(lengths):.0f} "
          f"tokens (max {max(lengths)}), batch {args.batch_size}, {min(call_size, len(texts))} chunks per call, "
          f"best of {args.repeats} alternating rounds on {device}")
    print(f"padding fraction: {padding_fraction(lengths, arrival_batches(len(texts), args.batch_size)):.3f} in arrival "
          f"order, {padding_fraction(lengths, length_batches(lengths, args.batch_size)):.3f} length-bucketed "
          f"(per model call of {args.batch_size})")

    paths = [("torch fp32 encode (baseline)", base)]
    if on_gpu:
        direct = Embedder(EmbedderConfig(batch_size=args.batch_size, device=device, direct=True))
        paths.append(("torch fp16 direct", direct))
    else:
        paths.append(("onnx fp32, bucketed", Embedder(EmbedderConfig(batch_size=args.batch_size, device=device,
                                                                     backend="onnx"))))
        if args.int8:
            paths.append(("onnx int8, bucketed", Embedder(EmbedderConfig(batch_size=args.batch_size, device=device,
                                                                         backend="onnx", quantize="int8"))))
        direct = Embedder(EmbedderConfig(batch_size=args.batch_size, device=device, direct=True))
        paths.append(("torch fp32 direct", direct))
    for _, embedder in paths:
        embedder.warm_up()
    alone = ModelAlone(direct, texts)
    # Alternating rounds, best of each: a shared machine's load hits every path alike.
    rates = {name: 0.0 for name, _ in paths}
    alone_rate = 0.0
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, embedder in paths:
            rate, vectors[name] = timed(embedder, texts, call_size)
            rates[name] = max(rates[name], rate)
        alone_rate = max(alone_rate, alone.run())
    base_name = paths[0][0]
    base_docs, base_q = vectors[base_name], base.run(queries)
    print(f"{'path':32} {'chunks/s':>9} {'x base':>7} {'cosine':>7} {'top-10':>7}")
    for name, embedder in paths:
        docs, q = vectors[name], embedder.run(queries)
        cosine = float(np.mean(np.sum(docs * base_docs, axis=1)))
        overlap = top10_overlap(base_docs, base_q, docs, q)
        print(f"{name:32} {rates[name]:9.1f} {rates[name] / rates[base_name]:7.2f} {cosine:7.4f} {overlap:7.3f}")
    print(f"{'model alone (direct batches)':32} {alone_rate:9.1f} {alone_rate / rates[base_name]:7.2f}")
    direct_name = paths[-1][0]  # the direct path comes last
    print(f"{direct_name}: {rates[direct_name] / alone_rate:.0%} of the model alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
