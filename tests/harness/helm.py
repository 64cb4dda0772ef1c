"""helm for the chart tests: the binary hack/build-control-plane.sh builds, and `helm template`.

helm is found the way the `control_plane_assets` fixture finds kube-apiserver (the script's --check
mode, which also checks helm's version), so a missing build fails at once and names
`make control-plane`; it is never a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from testenv.control_plane import ControlPlaneError, resolve_assets

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tributary"


def helm_binary() -> Path:
    """The cached helm; a pytest failure naming `make control-plane` when it is missing."""
    try:
        helm = resolve_assets(build=False) / "helm"
    except ControlPlaneError as exc:
        problem = f"helm is missing: run `make control-plane`\n{exc}"
    else:
        if os.access(helm, os.X_OK):
            return helm
        problem = f"{helm} is missing: run `make control-plane` (with KUBEBUILDER_ASSETS, put helm there)"
    pytest.fail(problem, pytrace=False)


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"`helm {' '.join(args)}` exited with {result.returncode}:\n{result.stderr.strip()}")
    return result


def render(
    helm: Path,
    release: str = "tributary",
    namespace: str = "tributary-system",
    values: dict[str, Any] | None = None,
    extra: Sequence[str] = (),
    tmp_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """`helm template` of the chart, parsed: one dict per object (CRDs only with --include-crds)."""
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    if values:
        if tmp_dir is None:
            raise ValueError("values need a tmp_dir for the values file")
        path = tmp_dir / f"values-{len(list(tmp_dir.glob('values-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return [doc for doc in yaml.safe_load_all(run_helm(helm, *args).stdout) if doc]


def find(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    """Objects of a kind, optionally by name and namespace."""
    return [
        obj for obj in objects
        if obj["kind"] == kind
        and (name is None or obj["metadata"]["name"] == name)
        and (namespace is None or obj["metadata"].get("namespace") == namespace)
    ]  # fmt: skip


def one(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None,
        namespace: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''} {namespace or ''}, got {len(found)}"
    return found[0]
