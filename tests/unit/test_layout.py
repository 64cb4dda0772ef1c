"""The repository layout promises: operator/ never shadows the stdlib, the data plane never imports kopf,
and test infrastructure never ships in the package."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cwd", [ROOT, ROOT / "operator", ROOT / "workers", ROOT / "tests"])
def test_stdlib_operator_is_never_shadowed(cwd):
    code = "import operator, sysconfig; print(operator.__file__); print(sysconfig.get_paths()['stdlib'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    module_file, stdlib = out.stdout.split("\n")[:2]
    assert module_file.startswith(stdlib), module_file
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_data_plane_never_imports_kopf():
    """At run time too (import-linter checks the static imports): every module of the data plane."""
    code = (
        "import importlib, pkgutil, sys, tributary_workers\n"
        "for module in pkgutil.walk_packages(tributary_workers.__path__, 'tributary_workers.'):\n"
        "    importlib.import_module(module.name)\n"
        "print('kopf' in sys.modules, 'tributary_operator' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_the_test_control_plane_is_not_in_the_package():
    """The process kubelet and control plane are test infrastructure: they live in tests/testenv."""
    packaged = [p for root in ("workers", "operator") for p in (ROOT / root).rglob("*.py")]
    assert not [p for p in packaged if "testing" in p.parts or "testenv" in p.parts]
    assert (ROOT / "tests" / "testenv" / "control_plane.py").exists()
