"""The repository layout promises: operator/ never shadows the stdlib, the data plane never imports kopf."""

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
    modules = [p.stem for p in (ROOT / "workers" / "tributary_workers").glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('tributary_workers.' + name)\n"
        "print('kopf' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
