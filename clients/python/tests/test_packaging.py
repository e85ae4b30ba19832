"""The package as users install it: no dependency, typed (PEP 561), Python >= 3.9."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import reflexio_telemetry
from conftest import SRC


def test_the_installed_distribution_is_typed_and_has_no_dependency():
    site = sysconfig.get_paths()["purelib"]
    found = [d for d in importlib.metadata.distributions(path=[site])
             if d.metadata["Name"] == "reflexio-telemetry"]
    if len(found) != 1:
        pytest.fail("reflexio-telemetry is not installed: run scripts/test, or "
                    "pip install ./clients/python", pytrace=False)
    (dist,) = found
    assert dist.version == reflexio_telemetry.__version__
    assert dist.requires is None or dist.requires == []
    assert dist.metadata["Requires-Python"] == ">=3.9"
    files = {str(f) for f in dist.files or []}
    assert "reflexio_telemetry/py.typed" in files
    sources = {p.name for p in (SRC / "reflexio_telemetry").glob("*.py")}
    assert sources <= {Path(f).name for f in files}, "a module is missing from the distribution"


def test_the_code_runs_on_python_3_9():
    vermin = Path(sys.executable).with_name("vermin")
    done = subprocess.run(
        [str(vermin), "--target=3.9-", "--violations", "--no-tips", "--eval-annotations",
         "--backport", "typing", str(SRC / "reflexio_telemetry")],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_only_the_standard_library_is_imported():
    code = ("import sys, reflexio_telemetry; "
            "mods = {m.split('.')[0] for m in sys.modules}; "
            "std = set(sys.stdlib_module_names) | set(sys.builtin_module_names); "
            "print(sorted(mods - std - {'reflexio_telemetry', '__main__'}))")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_package_type_checks_strictly():
    mypy = Path(sys.executable).with_name("mypy")
    done = subprocess.run([str(mypy), "--strict", "--no-incremental", str(SRC / "reflexio_telemetry")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_syntax_is_python_3_9():
    import ast

    paths = sorted((SRC / "reflexio_telemetry").glob("*.py"))
    assert len(paths) >= 5, paths
    for path in paths:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
