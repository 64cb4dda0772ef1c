"""The layering written in pyproject.toml ([tool.importlinter]) holds: import-linter checks every
contract (the data plane never imports kopf or the operator; the operator never embeds text and
reaches the workers only through tributary_workers.contract; api/ and core/ are free of kopf and the
Kubernetes client; the workers' sub-packages are layered without cycles)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_import_contract_is_kept():
    result = lint_imports()
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_a_broken_contract_fails_the_check(tmp_path):
    """The check can fail: a data-plane module that imports the operator breaks a contract."""
    config = tmp_path / "importlinter.toml"
    config.write_text(
        (ROOT / "pyproject.toml").read_text().split("[tool.importlinter]")[0]
        + '[tool.importlinter]\nroot_packages = ["tributary_workers", "tributary_operator", "violation"]\n'
        + 'include_external_packages = true\n\n[[tool.importlinter.contracts]]\n'
        + 'name = "The violation never imports the operator"\ntype = "forbidden"\n'
        + 'source_modules = ["violation"]\nforbidden_modules = ["tributary_operator"]\n'
    )
    package = tmp_path / "violation"
    package.mkdir()
    (package / "__init__.py").write_text("import tributary_operator.core.ingestion  # noqa: F401\n")
    env_path = f"{tmp_path}:{ROOT / 'workers'}:{ROOT / 'operator'}"
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--config", str(config)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "violation -> tributary_operator" in result.stdout.replace("\n", " ")
