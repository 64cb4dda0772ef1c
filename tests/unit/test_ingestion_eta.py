"""IngestionJob status.eta: time left at the rate measured so far (printer column ETA)."""

from datetime import UTC, datetime

import pytest
from tributary_operator.core.ingestion.status import eta

NOW = datetime(2026, 11, 24, 12, 10, 0, tzinfo=UTC)  # ten minutes after the start below
START = "2026-11-24T12:00:00Z"


@pytest.mark.parametrize("start, done, total, expected", [
    (START, 50, 100, "10m0s"),  # half done in 10 minutes: 10 more
    (START, 75, 100, "3m20s"),  # 600 s * 25 / 75
    (START, 1, 1000, "166h30m"),  # 600 s per document, 999 left
    (START, 100, 100, "0s"),
    (START, 120, 100, "0s"),  # a resumed count above the listing never goes negative
    (START, 0, 100, None),  # no rate yet
    (START, 10, 0, None),
    (None, 10, 100, None),
    ("2026-11-24T12:20:00Z", 10, 100, None),  # a clock behind the start: no estimate
])
def test_eta(start, done, total, expected):
    assert eta(start, done, total, now=NOW) == expected
