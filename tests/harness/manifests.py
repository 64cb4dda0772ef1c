"""Small helpers for building test manifests."""

from __future__ import annotations

import copy
from typing import Any


def with_path(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``manifest`` with the dotted ``path`` set to ``value`` (deleted when None)."""
    manifest = copy.deepcopy(manifest)
    *parents, leaf = path.split(".")
    node = manifest
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return manifest
