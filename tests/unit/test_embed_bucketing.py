"""Length bucketing: batches of similar length, bounded by count and token budget, less padding."""

from __future__ import annotations

import pytest
from tributary_workers.pipeline.bucketing import arrival_batches, length_batches, padding_fraction


def test_batches_are_length_sorted_and_cover_every_chunk_once():
    lengths = [5, 200, 17, 190, 6, 180, 4]
    batches = length_batches(lengths, batch_size=3)
    assert [[lengths[i] for i in b] for b in batches] == [[200, 190, 180], [17, 6, 5], [4]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_token_budget_bounds_padded_tokens_but_a_long_chunk_always_fits():
    lengths = [100, 100, 100, 10, 10, 500]
    batches = length_batches(lengths, batch_size=8, token_budget=250)
    assert all(max(lengths[i] for i in b) * len(b) <= 250 or len(b) == 1 for b in batches)
    assert batches[0] == [5]  # 500 tokens alone, over the budget but never dropped


def test_bucketing_cuts_padding_on_mixed_lengths():
    lengths = [250, 12, 240, 8, 230, 15, 220, 9] * 4
    before = padding_fraction(lengths, arrival_batches(len(lengths), 4))
    after = padding_fraction(lengths, length_batches(lengths, 4))
    assert before > 0.4 and after < 0.05


def test_padding_of_uniform_batches_is_zero_and_bad_batch_size_is_refused():
    assert padding_fraction([7, 7, 7], [[0, 1, 2]]) == 0.0
    assert padding_fraction([], []) == 0.0
    with pytest.raises(ValueError, match="batch size"):
        length_batches([1], 0)
