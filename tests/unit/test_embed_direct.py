"""The directly fed encoder's pure parts: slices, padding, the prefetch thread, and when it is chosen."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tributary_workers.pipeline.bucketing import padded
from tributary_workers.pipeline.direct import prefetched, slices
from tributary_workers.pipeline.embedder import Embedder, EmbedderConfig


@pytest.mark.parametrize("count,size,expected", [
    (0, 4, []),
    (3, 4, [range(0, 3)]),
    (8, 4, [range(0, 4), range(4, 8)]),
    (9, 4, [range(0, 4), range(4, 8), range(8, 9)]),
])
def test_slices_cover_every_index_once_in_order(count, size, expected):
    assert slices(count, size) == expected


def test_a_slice_size_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        slices(3, 0)


def test_padded_rows_and_mask():
    ids, mask = padded([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_prefetched_yields_everything_in_order_from_another_thread():
    seen = []

    def produce():
        for i in range(50):
            seen.append(threading.current_thread().name)
            yield i
    assert list(prefetched(produce(), depth=3)) == list(range(50))
    assert set(seen) == {"embed-prefetch"}


def test_a_producer_failure_is_raised_in_the_consumer_after_what_came_before():
    def produce():
        yield 1
        yield 2
        raise RuntimeError("tokenizer broke")
    got = []
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        for item in prefetched(produce(), depth=1):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []

    def produce():
        for i in range(10_000):
            produced.append(i)
            yield i
    stream = prefetched(produce(), depth=2)
    assert next(stream) == 0
    stream.close()  # joins the producer thread
    assert len(produced) <= 5  # it stopped at its next item instead of running to the end


@pytest.mark.parametrize("device,direct,expected", [
    ("cpu", None, False),  # encode: on CPU the host work is small next to the model
    ("cuda", None, True),
    ("cuda:1", None, True),
    ("cpu", True, True),
    ("cuda", False, False),
])
def test_the_model_is_fed_directly_on_cuda_unless_told(device, direct, expected):
    embedder = Embedder(EmbedderConfig(device=device, direct=direct))
    embedder.device = device  # what warm_up picks, without loading a model
    assert embedder._fed_directly() is expected


@pytest.mark.parametrize("device,direct,batch_size,expected", [
    ("cpu", None, 64, 64),  # encode: the configured batch
    ("cpu", object(), 64, 64),  # fed directly on CPU: the model, not the host, is the cost
    ("cuda", object(), 64, 8192),  # a GPU fed directly: eight slices per call
    ("cuda", object(), 10_000, 10_000),  # never fewer than asked for
    ("cuda", None, 64, 64),  # encode on a GPU (direct=False)
])
def test_callers_gather_more_chunks_per_call_only_for_a_gpu_fed_directly(device, direct, batch_size, expected):
    embedder = Embedder(EmbedderConfig(device=device, batch_size=batch_size))
    embedder.device, embedder._direct = device, direct  # what warm_up sets, without loading a model
    assert embedder.call_size == expected
