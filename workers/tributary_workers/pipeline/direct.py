"""Torch without ``encode``: tokenizer → the model's own modules on the device → unit vectors.

sentence-transformers' ``encode`` builds each batch on the host (Python lists, per-batch tensors)
and copies every batch's result back before starting the next; on a GPU that host work, not the
model, takes most of the time. Here instead:

- tokenizing runs one slice ahead in a background thread (the Rust tokenizer releases the GIL),
  so the host prepares slice k+1 while the device computes slice k;
- batches are cut from length-sorted chunks by a token budget (padded tokens per forward), so
  short chunks travel in big batches and long ones in small, with little padding;
- padded ids go through pinned memory and are copied without blocking; vectors stay on the
  device until one copy back per call;
- on CUDA the weights run in fp16 (vectors within cosine 0.999 of fp32: the same encoder to a
  collection, contract/encoder.py); on CPU in fp32, which is how CI tests this code.

The model's modules run as they are (``SentenceTransformer.forward``), so any pooling and any
Dense/Normalize modules after it behave as in ``encode``; the result is normalised once more in
fp32, as ``encode(normalize_embeddings=True)`` does.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from tributary_workers.pipeline.bucketing import length_batches, padded

GPU_TOKEN_BUDGET = 65_536  # padded tokens per forward on a GPU: 512 chunks of 128 tokens
GPU_MAX_ROWS = 1024  # chunks per forward on a GPU, however short
SLICE = 1024  # chunks tokenized per step of the background thread
AHEAD = 16  # batches prepared ahead of the device (pinned host memory: a few MB)
GPU_CALL_SIZE = 8 * SLICE  # chunks a caller gathers per call on a GPU: tokenizing overlaps 7 slices' forwards


def slices(count: int, size: int = SLICE) -> list[range]:
    """Consecutive ranges of at most ``size`` indices covering ``range(count)``."""
    if size < 1:
        raise ValueError(f"slice size must be at least 1, got {size}")
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


_END = object()


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """Yield what ``items`` yields, computed up to ``depth`` items ahead in a background thread.

    An exception in the producer is raised in the consumer; a consumer that stops early (or
    fails) stops the producer at its next item."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put((_END, exc))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="embed-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class DirectEncoder:
    """Unit-length float32 vectors for texts, the model fed directly on its device.

    One per (model, device, precision) per process; calls are serialised (the device runs one
    forward at a time anyway, and the tokenizer copy here is not thread-safe)."""

    def __init__(self, st_model, device: str, max_seq_length: int, max_rows: int,
                 token_budget: int | None, half: bool, slice_size: int = SLICE):
        import torch

        self.device = torch.device(device)
        self.max_seq_length = max_seq_length
        self.max_rows = max_rows
        self.token_budget = token_budget
        self.slice_size = slice_size
        self.half = half
        model = copy.deepcopy(st_model).half() if half else st_model  # the shared fp32 model stays as it is
        self.model = model.to(self.device).eval()
        # Its own tokenizer: fast tokenizers raise "Already borrowed" when shared across threads.
        self.tokenizer = copy.deepcopy(st_model.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.token_types = "token_type_ids" in self.tokenizer.model_input_names
        self.pin = self.device.type == "cuda"
        self.dimension = int(st_model.get_embedding_dimension())
        self._lock = threading.Lock()

    def _batches(self, texts: Sequence[str]) -> Iterator[tuple[object, dict]]:
        """(indices of the texts, model inputs on the host) per batch, slice by slice."""
        import torch

        for part in slices(len(texts), self.slice_size):
            ids = self.tokenizer(list(texts[part.start:part.stop]), truncation=True,
                                 max_length=self.max_seq_length, add_special_tokens=True)["input_ids"]
            lengths = [len(row) for row in ids]
            for batch in length_batches(lengths, self.max_rows, self.token_budget):
                input_ids, mask = padded([ids[i] for i in batch], self.pad_id)
                feed = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
                if self.token_types:
                    feed["token_type_ids"] = torch.zeros_like(feed["input_ids"])
                index = torch.tensor([part.start + i for i in batch], dtype=torch.long)
                if self.pin:
                    feed = {name: tensor.pin_memory() for name, tensor in feed.items()}
                    index = index.pin_memory()
                yield index, feed

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock, torch.inference_mode():
            out = torch.empty((len(texts), self.dimension), dtype=torch.float32, device=self.device)
            batches = self._batches(texts)
            if len(texts) > self.slice_size:
                batches = prefetched(batches, AHEAD)
            for index, feed in batches:
                feed = {name: tensor.to(self.device, non_blocking=self.pin) for name, tensor in feed.items()}
                vectors = self.model(feed)["sentence_embedding"].float()
                out[index.to(self.device, non_blocking=self.pin)] = F.normalize(vectors, dim=1)
            return out.cpu().numpy()
