"""The dependency direction of DESIGN.md §1: workflows -> pipeline -> centernet, never back.

Each package is imported in a fresh interpreter with the forbidden packages made unimportable;
every module of it must still import. (``lint-imports`` checks the same layers statically.)
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "centernet": ["ray", "mlflow", "pyarrow", "pipeline", "workflows"],
    "pipeline": ["mlflow", "workflows"],
}

PROBE = """
import importlib, pkgutil, sys
blocked = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"forbidden import of {{name}}")
        return None
sys.meta_path.insert(0, Block())
pkg = importlib.import_module({package!r})
for info in pkgutil.walk_packages(pkg.__path__, prefix={package!r} + "."):
    importlib.import_module(info.name)
print("ok")
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_without_forbidden_dependencies(package):
    code = PROBE.format(blocked=FORBIDDEN[package], package=package)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_probe_can_fail():
    code = PROBE.format(blocked=["numpy"], package="centernet")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "forbidden import of numpy" in proc.stderr


def test_import_linter_layers_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "KEPT" in proc.stdout


def test_packages_are_importable_without_side_effects():
    import centernet

    names = [m.name for m in pkgutil.walk_packages(centernet.__path__, prefix="centernet.")]
    assert {"centernet.targets", "centernet.losses", "centernet.decode", "centernet.models"} <= set(names)
