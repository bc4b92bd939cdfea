"""The contract between `centernet train` and using its model, end to end: a real training run
(subprocess, local Ray on 127.0.0.1, 1 epoch on a tiny COCO directory) is registered, resolved as
models:/NAME@champion and predicts with the dataset's own category ids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from centernet.synthetic import make_synthetic_coco
from workflows.model_source import resolve_model
from workflows.register import register_run

CLI = str(Path(sys.executable).with_name("centernet"))
pytestmark = pytest.mark.timeout(600)


def test_train_register_predict(tmp_path):
    data = make_synthetic_coco(tmp_path / "coco", 8, seed=2, image_size=(64, 80), object_size=(20, 40),
                               objects_per_image=(1, 2), category_ids=(2, 7, 90))
    coco_dir = str(data.images_dir.parent)  # images/ + annotations.json
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    train = subprocess.run(
        [CLI, "train", "--data", coco_dir, "--val-data", coco_dir, "--arch", "resnet18", "--pretrained", "none",
         "--epochs", "1", "--batch-size", "4", "--input-size", "64", "--workers", "1", "--loader-workers", "0",
         "--lr", "1e-3", "--storage-path", str(tmp_path / "results"), "--name", "e2e", "--no-progress"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert train.returncode == 0, train.stderr[-4000:]
    run_id = re.search(r"mlflow: +run (\w+)", train.stdout).group(1)

    registration = register_run(run_id, "e2e", tracking_uri=uri)
    assert registration.champion and registration.val_ap is not None and 0.0 <= registration.val_ap <= 1.0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    version = client.get_model_version("e2e", registration.version)
    assert version.run_id == run_id and version.tags["arch"] == "resnet18"
    assert run.data.tags["centernet.kind"] == "train"
    assert version.tags["data_hash"] == run.data.tags["data_hash"]
    assert version.tags["val_data_hash"] == run.data.tags["val_data_hash"] != ""
    assert float(version.tags["val_AP"]) == pytest.approx(run.data.metrics["val/AP"])

    loaded = resolve_model("models:/e2e@champion", tracking_uri=uri)
    assert loaded.spec.arch == "resnet18" and loaded.spec.input_size == (64, 64)
    assert loaded.spec.categories.category_ids == (2, 7, 90) and loaded.run_id == run_id
    predict = subprocess.run([CLI, "predict", "--model", "models:/e2e@champion", "--images", "coco/images",
                              "--out", "predictions", "--threshold", "0.0", "--workers", "0"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert predict.stdout.startswith("8 images, ")
    detections = json.loads((tmp_path / "predictions" / "detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= {2, 7, 90}
    assert {d["image_id"] for d in detections} <= set(range(1, 9))
