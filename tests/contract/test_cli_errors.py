"""Every failure a new user can provoke from the command line ends with one line naming the
problem and a non-zero exit, no traceback; inputs that cannot work are refused before Ray starts
and before anything is written. Run through ``workflows.cli.main`` as the console script does."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(result, *phrases: str) -> str:
    return result.one_error_line(*phrases)  # tests/contract/conftest.py


@pytest.fixture
def coco(tmp_path):
    from centernet.synthetic import make_synthetic_coco

    return make_synthetic_coco(tmp_path / "coco", 2, seed=0, image_size=(64, 64))


def test_train_refuses_bad_data_in_one_line(cli, tmp_path):
    run = cli
    (tmp_path / "empty").mkdir()
    _one_error_line(run("train", "--data", "missing"), "missing: no such directory")
    _one_error_line(run("train", "--data", "empty"), "empty: not a data directory")
    _one_error_line(run("train", "--data", "empty", "--val-data", "missing"), "not a data directory")


@pytest.mark.parametrize("args, phrase", [
    (["--arch", "nope"], "unknown architecture 'nope'"),
    (["--epochs", "0"], "epochs: must be an integer >= 1"),
    (["--input-size", "500"], "input_size must be a positive multiple of 32"),
    (["--lr-steps", "9,3"], "lr_steps: must be increasing"),
    (["--loss-weights", "hm=x"], "loss_weights.hm: expected a number"),
    (["--loss-weights", "cls=1"], "unknown loss names"),
    (["--epochs", "ten"], "Invalid value for '--epochs'"),
    (["--no-such-flag"], "No such option: --no-such-flag"),
])
def test_train_refuses_bad_options_in_one_line(cli, coco, args, phrase):
    result = cli("train", "--data", str(coco.images_dir.parent), *args)
    _one_error_line(result, phrase)
    assert result.code == 2


def test_train_config_file_errors_name_the_key(cli, tmp_path, coco):
    run = cli
    (tmp_path / "bad.yaml").write_text(f"data: {coco.images_dir.parent}\nepochz: 3\n")
    _one_error_line(run("train", "--config", "bad.yaml"), "unknown key 'epochz'")
    (tmp_path / "typed.yaml").write_text(f"data: {coco.images_dir.parent}\nbatch_size: many\n")
    _one_error_line(run("train", "--config", "typed.yaml"), "batch_size: expected an integer")
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    _one_error_line(run("train", "--config", "broken.yaml"), "not valid YAML")
    _one_error_line(run("train", "--config", "nowhere.yaml"), "nowhere.yaml: config file not found")


def test_train_on_a_cluster_refuses_relative_paths_and_dead_addresses(cli, coco):
    run = cli
    port = _closed_port()
    _one_error_line(run("train", "--data", "coco", "--address", f"127.0.0.1:{port}"),
                    "--data coco", "shared storage")
    _one_error_line(run("train", "--data", str(coco.images_dir.parent), "--address", f"127.0.0.1:{port}",
                         "--pretrained", "none"), f"cannot reach the Ray cluster at 127.0.0.1:{port}")


def test_precompute_checks_inputs_before_starting_ray_or_writing_anything(cli, tmp_path, coco, monkeypatch):
    import pipeline.ray_local

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for inputs that cannot work")

    monkeypatch.setattr(pipeline.ray_local, "local_ray", no_ray)  # every embedded start goes through it
    run = cli
    ann = str(coco.annotations)
    (tmp_path / "notcoco.json").write_text(json.dumps({"images": []}))
    (tmp_path / "notjson.json").write_text("{")
    cases = [
        (["--images", "nodir", "--annotations", ann], "nodir: image directory not found"),
        (["--images", str(coco.images_dir.parent), "--annotations", ann], "none of the 2 images listed"),
        (["--images", str(coco.images_dir), "--annotations", "notcoco.json"], "missing the 'annotations' list"),
        (["--images", str(coco.images_dir), "--annotations", "notjson.json"], "not valid JSON"),
        (["--images", str(coco.images_dir), "--annotations", "none.json"], "none.json"),
        (["--images", str(coco.images_dir), "--annotations", ann, "--input-size", "500"], "multiple of 32"),
    ]
    for args, phrase in cases:
        _one_error_line(run("precompute", *args, "--out", "out"), phrase)
        assert not Path(tmp_path / "out").exists(), args


def test_submit_errors_are_one_line(cli, tmp_path):
    run = cli
    port = _closed_port()
    address = f"http://127.0.0.1:{port}"
    _one_error_line(run("submit", "--address", address, "--status", "raysubmit_1"),
                    f"cannot reach the Ray cluster at {address}")
    _one_error_line(run("submit", "--address", address, "--", "--data", "/nfs/x"), "--storage-path")
    _one_error_line(run("submit", "--address", address, "--", "--data", "shards", "--storage-path", "/s"),
                    "--data shards", "absolute path")
    _one_error_line(run("submit", "--address", address, "--", "--data", "/nfs/x", "--storage-path", "/s"),
                    "cannot reach the Ray cluster")
    _one_error_line(run("submit", "--address", address), "nothing to submit")
