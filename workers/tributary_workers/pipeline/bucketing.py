"""Length bucketing: batches of chunks of similar token length, so padding wastes little compute.

A batch is padded to its longest chunk (``padded``); sorting by length before cutting batches
makes every batch nearly uniform. Results go back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Indices into ``lengths``, longest first, cut into batches of at most ``batch_size`` chunks
    and (when given) at most ``token_budget`` padded tokens (a single chunk always fits)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Longest first: the batch's first chunk sets its padded width.
        width = lengths[current[0]] if current else lengths[index]
        if current and (len(current) >= batch_size or
                        (token_budget is not None and width * (len(current) + 1) > token_budget)):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def arrival_batches(count: int, batch_size: int) -> list[list[int]]:
    """Batches in the order the chunks came: what an unbucketed model call does."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded tokens that are padding."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 0.0 if padded == 0 else 1 - real / padded


def padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask) as int64 arrays padded to the longest row."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
    return ids, mask
