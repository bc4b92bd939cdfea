"""A user in a directory that is not the project's: `precompute`, `train` and `predict` with relative
paths work, the log stays short, and the embedded Ray listens on loopback only (dashboard included)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sockets import descendants, is_loopback, listening

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_TRACKING_URI"))}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the command must keep Ray on loopback by itself
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _watch_sockets(proc: subprocess.Popen, seen: set, dashboards: set, stop: threading.Event) -> None:
    """Collect (address, port) of every listening socket of the job's processes; those of Ray's
    dashboard process (its port is chosen free at start) also go to ``dashboards``."""
    while not stop.is_set() and proc.poll() is None:
        for pid, address, port in listening(descendants(proc.pid)):
            seen.add((address, port))
            if "dashboard/dashboard.py" in _cmdline(pid):
                dashboards.add((address, port))
        time.sleep(0.3)


def test_relative_paths_from_another_directory_and_loopback_only(tmp_path):
    from centernet.synthetic import make_synthetic_coco

    make_synthetic_coco(tmp_path / "datasets" / "train", 12, seed=0, image_size=(64, 96))
    make_synthetic_coco(tmp_path / "datasets" / "val", 4, seed=1, image_size=(64, 96))
    work = tmp_path / "work"
    work.mkdir()
    env = _env(tmp_path)
    for split, extra in (("train", []), ("val", ["--no-augment"])):
        pre = subprocess.run(["centernet", "precompute", "--images", f"../datasets/{split}/images",
                              "--annotations", f"../datasets/{split}/annotations.json", "--out", f"shards/{split}",
                              "--input-size", "64", "--workers", "1", *extra], cwd=work, env=env,
                             capture_output=True, text=True, timeout=300)
        assert pre.returncode == 0, pre.stderr[-2000:]
        assert (work / "shards" / split / "manifest.json").is_file()

    proc = subprocess.Popen(["centernet", "train", "--data", "shards/train", "--val-data", "shards/val",
                             "--pretrained", "none", "--epochs", "2", "--workers", "2", "--batch-size", "4",
                             "--loader-workers", "0"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: set = set()
    dashboards: set = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_sockets, args=(proc, seen, dashboards, stop), daemon=True)
    watcher.start()
    try:
        out, _ = proc.communicate(timeout=500)
    finally:
        stop.set()
        proc.kill()
    watcher.join(timeout=5)
    assert proc.returncode == 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) < 40, out
    assert not any("Traceback" in ln or "WARNING" in ln for ln in lines), out
    assert (work / "ray_results").is_dir() and (work / "mlruns.db").is_file()  # the user's directory
    assert "val/AP50" in out

    assert len(seen) >= 4, seen  # GCS, raylet, dashboard, workers: the check saw the servers
    outside = sorted(s for s in seen if not is_loopback(s[0]))
    assert not outside, f"Ray listened beyond loopback: {outside}"
    assert dashboards, f"no dashboard process listening among {sorted(seen)}"  # on, and on loopback (above)

    checkpoints = sorted((work / "ray_results").glob("*/*/checkpoint.pt"))
    assert checkpoints, sorted(p.relative_to(work) for p in (work / "ray_results").rglob("*"))
    model = checkpoints[-1].relative_to(work)
    pred = subprocess.run(["centernet", "predict", "--model", str(model), "--images", "../datasets/val/images",
                           "--out", "predictions", "--threshold", "0.01"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert (work / "predictions" / "detections.json").is_file()
    assert len(list((work / "predictions" / "images").iterdir())) == 4
