"""`centernet predict` from a checkpoint, runs:/ and models:/NAME@champion (real MLflow store): the
same detections.json, the dataset's own category ids, drawn images, corrupt files skipped, and
bad input as one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from workflows.cli import build_app
from workflows.errors import UserError

CLI = str(Path(sys.executable).with_name("centernet"))


@pytest.fixture(scope="module")
def images(tmp_path_factory, trained_detector) -> Path:
    """The detector's images plus one corrupt file, in a folder."""
    folder = tmp_path_factory.mktemp("inputs")
    for f in Path(trained_detector.data.images_dir).iterdir():
        shutil.copy2(f, folder / f.name)
    (folder / "000099.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    return folder


def _predict(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(build_app(), ["predict", *args], env=env)


def test_checkpoint_run_and_champion_give_identical_detections(shapes_registry, trained_detector, images, tmp_path):
    env = {"MLFLOW_TRACKING_URI": shapes_registry.tracking_uri}
    outputs = {}
    for name, source in (("file", str(trained_detector.strong)), ("run", f"runs:/{shapes_registry.run_id}"),
                         ("champion", f"models:/{shapes_registry.name}@champion")):
        result = _predict(["--model", source, "--images", str(images), "--out", str(tmp_path / name),
                           "--threshold", "0.3", "--workers", "0"], env)
        assert result.exit_code == 0, result.output
        assert "6 images (1 unreadable, skipped), " in result.output and "images/s" in result.output
        assert "skipped 000099.jpg" in result.output or "000099.jpg: not a decodable image" in result.output
        outputs[name] = json.loads((tmp_path / name / "detections.json").read_text())
        drawn = sorted(p.name for p in (tmp_path / name / "images").iterdir())
        assert drawn == sorted(p.name for p in images.iterdir() if p.name != "000099.jpg")
        assert cv2.imread(str(tmp_path / name / "images" / drawn[0])) is not None
    assert outputs["file"] == outputs["run"] == outputs["champion"]
    dets = outputs["file"]
    gt = json.loads(Path(trained_detector.data.annotations).read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    assert {d["category_id"] for d in dets} <= {2, 7, 90}
    assert all(d["category_name"] == names[d["category_id"]] and d["score"] > 0.3 for d in dets)
    # one confident detection per image, on the right object (ids from the numeric file names)
    best = {}
    for d in dets:
        if d["score"] > best.get(d["image_id"], {"score": 0})["score"]:
            best[d["image_id"]] = d
    truth = {a["image_id"]: a["category_id"] for a in gt["annotations"]}
    assert {i: d["category_id"] for i, d in best.items()} == truth
    assert {d["file_name"] for d in dets} <= {p.name for p in images.iterdir()} | {str(p) for p in images.iterdir()}


def test_bad_input_is_a_one_line_error(shapes_registry, trained_detector, images, tmp_path):
    env = {"MLFLOW_TRACKING_URI": shapes_registry.tracking_uri}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    name = shapes_registry.name
    cases = {
        "models:/nope@champion": f"no registered model named 'nope' in {shapes_registry.tracking_uri}",
        f"models:/{name}@best": f"registered model '{name}' has no alias 'best' (aliases: champion)",
        f"models:/{name}/9": f"registered model '{name}' has no version '9' (versions: 1",
    }
    for source, message in cases.items():
        result = _predict(["--model", source, "--images", str(images), "--out", str(tmp_path / "o")], env)
        assert result.exit_code != 0 and isinstance(result.exception, UserError), result.output
        assert str(result.exception).startswith(message) and "\n" not in str(result.exception)
    result = _predict(["--model", str(trained_detector.strong), "--images", str(empty)], env)
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith(f"--images {empty}: no image files (.jpg")
    result = _predict(["--model", str(trained_detector.strong), "--images", str(images), "--threshold", "2"], env)
    assert isinstance(result.exception, UserError) and str(result.exception) == "--threshold 2.0: must be between 0 and 1"
    # the console script: one line on stderr, exit status 2
    proc = subprocess.run([CLI, "predict", "--model", "models:/nope@champion", "--images", str(images)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {cases['models:/nope@champion']} (register one with "
                                                "`centernet register --run RUN_ID --name NAME`)"]
