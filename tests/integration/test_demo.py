"""The quick-start job end to end, scaled down: data, training, evaluation, picture, checkpoint."""

from __future__ import annotations

import json
import math

import cv2

from centernet.checkpoint import load_checkpoint_file
from workflows.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    config = DemoConfig(train_images=32, val_images=8, input_size=64, image_size=(64, 96),
                        object_size=(10, 30), epochs=2, batch_size=8)
    result = run_demo(tmp_path, config)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["metrics"]) >= {"AP", "AP50", "AP75", "AP/square", "AP/circle", "AP/triangle"}
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in metrics["metrics"].values())
    picture = cv2.imread(str(result.picture))
    assert picture is not None and picture.shape[0] >= 256 and picture.shape[1] == 4 * 256
    ckpt = load_checkpoint_file(result.checkpoint)
    assert ckpt["epoch"] == 2 and ckpt["extra"]["classes"]["category_ids"] == [1, 2, 3]
    from workflows.tracking import client

    run = client(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["arch"] == "resnet18"
    assert run.data.metrics["val/AP50"] == metrics["metrics"]["AP50"]
    history = client(result.tracking_uri).get_metric_history(result.run_id, "loss/total")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client(result.tracking_uri).list_artifacts(result.run_id)}
    assert {"previews", "checkpoints", "metrics.json"} <= artifacts
