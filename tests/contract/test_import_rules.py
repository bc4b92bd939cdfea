"""Import rules: the dependency direction workflows -> pipeline -> centernet (never back), and
imports without side effects.

Each package is imported in a fresh interpreter with the forbidden packages made unimportable;
every module of it must still import. (``lint-imports`` checks the same layers statically.) Then
every module is imported once more in a fresh interpreter and must change nothing in the process
(files, working directory, processes, sockets, threads, Ray, environment, warnings, logging).
"""

from __future__ import annotations

import json
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


# Importing a module must do nothing but define things. The probe imports every module of a package
# in a fresh interpreter, in an empty working directory, after importing the third-party modules the
# package pulls in (found by a first run), and compares the process before and after each import.
SIDE_EFFECT_PROBE = r"""
import importlib, json, logging, os, pkgutil, sys, threading, warnings

package, mode, extra_path = sys.argv[1], sys.argv[2], sys.argv[3]
if extra_path:
    sys.path.insert(0, extra_path)


def ours(name):
    return name.split(".")[0] == package


def modules():
    pkg = importlib.import_module(package)
    return [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")]


def children():
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid():
            found.add(int(pid))
    return found


def sockets():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def loggers():
    manager = logging.root.manager
    state = {"<root>": (logging.root.level, tuple(map(id, logging.root.handlers)), True, False),
             "<disable>": manager.disable}
    for name, lg in list(manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            state[name] = (lg.level, tuple(map(id, lg.handlers)), lg.propagate, lg.disabled)
    return state


def snapshot():
    ray = sys.modules.get("ray")
    return {
        "files in the working directory": sorted(os.listdir(".")),
        "working directory": os.getcwd(),
        "child processes": children(),
        "open sockets": sockets(),
        "threads": {t.ident for t in threading.enumerate()},
        "ray initialised": bool(ray is not None and getattr(ray, "is_initialized", lambda: False)()),
        "environment variables": dict(os.environ),
        "warnings filters": [repr(f) for f in warnings.filters],
        "sys.path": list(sys.path),
    }


def changed(before, after, before_logs, after_logs):
    problems = [k for k in before if k not in ("threads", "child processes", "open sockets") and before[k] != after[k]]
    problems += [k for k in ("threads", "child processes") if after[k] - before[k]]
    problems += ["open sockets"] if after["open sockets"] > before["open sockets"] else []
    new_config = any(name not in before_logs and (state[0] != logging.NOTSET or state[1])
                     for name, state in after_logs.items())
    if new_config or any(after_logs.get(name) != state for name, state in before_logs.items()):
        problems.append("logging configuration")
    return problems


if mode == "deps":
    start = set(sys.modules)
    for name in modules():
        importlib.import_module(name)
    print(json.dumps([m for m in sys.modules if m not in start and not ours(m)]))
else:
    for dep in json.loads(sys.stdin.read()):
        try:
            importlib.import_module(dep)
        except Exception:
            pass
    report = {}
    for name in modules():
        before, before_logs = snapshot(), loggers()
        importlib.import_module(name)
        problems = changed(before, snapshot(), before_logs, loggers())
        if problems:
            report[name] = problems
    print(json.dumps(report))
"""


def import_side_effects(package: str, tmp_path: Path, extra_path: str = "") -> dict[str, list[str]]:
    """{module: [what importing it changed]} for every module of ``package`` (empty: none changed)."""
    def run(mode: str, stdin: str = "") -> str:
        workdir = tmp_path / f"cwd-{package}-{mode}"  # empty, and a fresh one for each run
        workdir.mkdir()
        proc = subprocess.run([sys.executable, "-c", SIDE_EFFECT_PROBE, package, mode, extra_path], cwd=workdir,
                              input=stdin, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    return json.loads(run("check", stdin=run("deps")))


@pytest.mark.parametrize("package", ["centernet", "pipeline", "workflows"])
def test_importing_has_no_side_effects(package, tmp_path):
    assert import_side_effects(package, tmp_path) == {}


BAD_MODULES = {  # module -> (source, the check it must trip)
    "files": ("open('created.txt', 'w').close()", "files in the working directory"),
    "z_chdir": ("import os\nos.chdir(os.path.dirname(__file__))", "working directory"),  # imported last
    "processes": ("import atexit, subprocess, sys\n"
                  "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                  "atexit.register(p.kill)", "child processes"),
    "sockets": ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))", "open sockets"),
    "threads": ("import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
                "threads"),
    "environ": ("import os\nos.environ['SIDE_EFFECT'] = '1'", "environment variables"),
    "filters": ("import warnings\nwarnings.simplefilter('ignore')", "warnings filters"),
    "logconfig": ("import logging\nlogging.basicConfig(level=logging.INFO)", "logging configuration"),
    "loglevel": ("import logging\nlogging.getLogger('ray').setLevel(logging.CRITICAL)", "logging configuration"),
    "syspath": ("import sys\nsys.path.append('/nonexistent')", "sys.path"),
    "rayinit": ("import ray\nray.init(num_cpus=1, include_dashboard=False, _node_ip_address='127.0.0.1')",
                "ray initialised"),
}


def test_side_effect_probe_catches_each_kind(tmp_path):
    """Every check of the probe fails on a module made to trip it, and only there."""
    pkg = tmp_path / "src" / "sidefx_demo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "clean.py").write_text("import logging\nlog = logging.getLogger(__name__)\nVALUE = 1\n")
    for name, (source, _) in BAD_MODULES.items():
        (pkg / f"{name}.py").write_text(source + "\n")
    report = import_side_effects("sidefx_demo", tmp_path, extra_path=str(tmp_path / "src"))
    for name, (_, check) in BAD_MODULES.items():
        assert check in report.get(f"sidefx_demo.{name}", []), (name, report)
    assert "sidefx_demo.clean" not in report and "sidefx_demo" not in report
