"""Fault tolerance: a training worker process killed mid-epoch; the run finishes from its latest
checkpoint (not from scratch) with the right final epoch."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray

from centernet.checkpoint import load_checkpoint_file
from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import precompute
from pipeline.schema import PrecomputeSettings
from workflows.tracking import client
from workflows.progress import progress_actor_name
from workflows.train import run_training
from workflows.train_config import TrainConfig

pytestmark = pytest.mark.timeout(300)


def test_worker_killed_mid_epoch_resumes_from_checkpoint(tmp_path, ray_local, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    data = make_synthetic_coco(tmp_path / "coco", 48, seed=0, image_size=(96, 128))
    precompute(data.images_dir, data.annotations, tmp_path / "train", PrecomputeSettings.of(input_size=64),
               chunk_size=8, progress=False)
    cfg = TrainConfig(pretrained="none", data=str(tmp_path / "train"), epochs=3, batch_size=2, num_workers=2, lr=1e-3,
                      loader_workers=0, max_failures=2, storage_path=str(tmp_path / "results"), name="fault")
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["out"] = run_training(cfg, show_progress=False)
        except BaseException as exc:  # surfaced by the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
        try:
            board = ray.get_actor(progress_actor_name("fault"))
            state = ray.get(board.get.remote())
        except Exception:
            continue
        p = state["progress"]
        # in the second epoch, once Ray has registered the first checkpoint (its controller
        # collects reports every couple of seconds): kill rank 1's process
        snapshot = tmp_path / "results" / "fault" / "checkpoint_manager_snapshot.json"
        registered = snapshot.is_file() and "epoch_0000" in snapshot.read_text()
        if registered and p.get("epoch", 0) >= 1 and 1 in state["workers"]:
            killed = state["workers"][1]["pid"]
            os.kill(killed, signal.SIGKILL)
    thread.join(timeout=240)
    assert killed is not None, "never saw the second epoch running"
    assert "error" not in outcome, outcome.get("error")
    out = outcome["out"]
    # the restarted worker group started from the latest registered checkpoint (epoch 0, or 1 if
    # the kill landed after its registration), not from scratch, and ran to the last epoch
    assert out.summary["start_epoch"] in (1, 2)
    assert out.metrics["epoch"] == 2
    assert load_checkpoint_file(out.checkpoint_path)["epoch"] == 2
    assert all(s["pid"] != killed for s in out.summary["shares"])
    run = client(os.environ["MLFLOW_TRACKING_URI"]).get_run(out.mlflow_run_id)
    assert run.info.status == "FINISHED"
