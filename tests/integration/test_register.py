"""Registering training runs: @champion moves only on a better val AP on the same validation data,
the registered pyfunc model predicts what the checkpoint predicts, and bad runs/stores are one-line
errors (real MLflow SQLite stores)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
import pytest
from typer.testing import CliRunner

from workflows.cli import build_app
from workflows.errors import UserError
from workflows.mlflow_access import fluent_tracking_uri
from workflows.register import CHAMPION_ALIAS, register_run

CLI = str(Path(sys.executable).with_name("centernet"))


def test_better_run_becomes_champion_and_worse_one_does_not(shapes_registry, trained_detector, make_train_run):
    from mlflow.tracking import MlflowClient

    td = trained_detector
    assert td.strong_ap > td.weak_ap + 0.1, (td.strong_ap, td.weak_ap)
    uri = shapes_registry.tracking_uri
    weak = make_train_run(uri, td.weak, val_ap=td.weak_ap, val_data_hash=td.data_hash,
                          tags={"centernet.tune_parent": "tune-parent-run"})
    result = CliRunner().invoke(build_app(), ["register", "--run", weak, "--name", "shapes"],
                                env={"MLFLOW_TRACKING_URI": uri})
    assert result.exit_code == 0, result.output
    assert "registered models:/shapes/2" in result.output
    assert f"@champion -> version 1: val AP {td.weak_ap:.4f} does not beat {td.strong_ap:.4f}" in result.output
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("shapes", CHAMPION_ALIAS).version) == "1"
    v2 = client.get_model_version("shapes", "2")
    assert v2.run_id == weak and v2.tags["source_run"] == weak and v2.tags["arch"] == "resnet18"
    assert float(v2.tags["val_AP"]) == pytest.approx(td.weak_ap) and v2.tags["val_data_hash"] == td.data_hash
    assert v2.tags["tune_parent"] == "tune-parent-run" and v2.tags["input_size"] == "64x64"

    # a new model name: the worse run first (no champion yet), then the better one takes the alias;
    # registered while another run is active in the process (as a Tune driver does), the model is
    # still the training run's output
    import mlflow

    first = register_run(weak, "ranked", tracking_uri=uri)
    with fluent_tracking_uri(uri), mlflow.start_run(run_name="tune-driver") as driver:
        better = register_run(shapes_registry.run_id, "ranked", tracking_uri=uri)
    outputs = client.get_run(shapes_registry.run_id).outputs.model_outputs
    assert better.model_id in {o.model_id for o in outputs}
    assert not (client.get_run(driver.info.run_id).outputs and client.get_run(driver.info.run_id).outputs.model_outputs)
    assert first.champion and first.reason == "no champion yet"
    assert better.champion and better.previous_champion == "1"
    assert better.reason == f"val AP {td.strong_ap:.4f} beats {td.weak_ap:.4f} of version 1"
    assert str(client.get_model_version_by_alias("ranked", CHAMPION_ALIAS).version) == better.version == "2"


def test_champion_pyfunc_predicts_what_the_checkpoint_predicts(shapes_registry, trained_detector):
    import mlflow.pyfunc

    from centernet.detect import detect_images, named_results
    from centernet.image_files import read_image
    from workflows.model_source import resolve_model

    files = sorted(Path(trained_detector.data.images_dir).iterdir())[:3]
    frame = pd.DataFrame({"image": [base64.b64encode(f.read_bytes()).decode() for f in files],
                          "image_id": [11, 12, 13]})
    with fluent_tracking_uri(shapes_registry.tracking_uri):
        served = mlflow.pyfunc.load_model(f"models:/{shapes_registry.name}@{CHAMPION_ALIAS}")
        got = served.predict(frame, params={"threshold": 0.1})
        as_arrays = served.predict({"image": [cv2.imread(str(f)) for f in files], "image_id": [11, 12, 13]},
                                   params={"threshold": 0.1})
    direct = resolve_model(str(trained_detector.strong))
    dets = detect_images(direct.model, [read_image(f) for f in files], direct.spec.input_size)
    want = [r for i, d in zip((11, 12, 13), dets) for r in named_results(d, i, direct.spec.categories, 0.1)]
    assert got.to_dict("records") == want and as_arrays.to_dict("records") == want
    assert {r["category_id"] for r in want} <= {2, 7, 90} and len(want) >= 3  # the dataset's own ids


def test_registering_from_a_store_without_the_run_fails_in_one_line(shapes_registry, tmp_path):
    from mlflow.tracking import MlflowClient

    other = f"sqlite:///{tmp_path / 'other.db'}"
    MlflowClient(other).search_experiments()  # creates the (empty) second store
    with pytest.raises(UserError) as info:
        register_run(shapes_registry.run_id, "shapes", tracking_uri=other)
    message = str(info.value)
    assert message == (f"run {shapes_registry.run_id!r} not found in the MLflow store {other}; check the run id or set "
                       "MLFLOW_TRACKING_URI to the store that holds it")
    assert "\n" not in message


def test_unknown_run_id_is_a_one_line_error_and_nonzero_exit(shapes_registry):
    env = {**os.environ, "MLFLOW_TRACKING_URI": shapes_registry.tracking_uri}
    result = CliRunner().invoke(build_app(), ["register", "--run", "0123456789abcdef", "--name", "shapes"], env=env)
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
    assert str(result.exception) == (f"run '0123456789abcdef' not found in the MLflow store {shapes_registry.tracking_uri}; "
                                     "check the run id or set MLFLOW_TRACKING_URI to the store that holds it")
    proc = subprocess.run([CLI, "register", "--run", "0123456789abcdef", "--name", "shapes"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {result.exception}"]
