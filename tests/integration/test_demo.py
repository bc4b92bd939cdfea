"""The quick-start job end to end, scaled down: data, training, evaluation, picture, checkpoint."""

from __future__ import annotations

import json
import math

import cv2

from centernet.checkpoint import load_checkpoint_file
from workflows.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end(tmp_path):
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
