"""`centernet tune` refuses what cannot work in one line and a non-zero exit, before Ray starts:
a bad search space, impossible options, a missing validation set; and `centernet submit -- tune`
routes a search to the cluster with the same path checks as training. Run through
``workflows.cli.main`` as the console script does."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def cli(cli):
    """The contract tests' ``cli``, failing the test if Ray was started (nothing here may start it)."""
    import ray

    def run(*argv: str):
        result = cli(*argv)
        assert not ray.is_initialized(), "Ray started for an input that cannot work"
        return result

    return run


@pytest.fixture
def data(tmp_path):
    """A COCO directory usable as training and validation data."""
    from centernet.synthetic import make_synthetic_coco

    return str(make_synthetic_coco(tmp_path / "coco", 2, seed=0, image_size=(64, 64)).images_dir.parent)


def one_error_line(result, *phrases: str) -> str:
    return result.one_error_line(*phrases)  # tests/contract/conftest.py


@pytest.mark.parametrize("space, phrases", [
    ("cls: 1\n", ["space.yaml: unknown key 'cls'; valid keys: hm, wh, reg, lr"]),
    ("wh: {loguniform: [-0.1, 1]}\n", ["space.yaml: wh: must not be negative, got -0.1"]),
    ("reg: {uniform: [2, 1]}\n", ["space.yaml: reg: low must be below high, got low 2 >= high 1"]),
    ("wh: [unclosed\n", ["space.yaml: not valid YAML"]),
])
def test_an_invalid_space_file_is_one_line_naming_file_and_key(cli, tmp_path, data, space, phrases):
    (tmp_path / "space.yaml").write_text(space)
    result = cli("tune", "--data", data, "--val-data", data, "--space", "space.yaml")
    one_error_line(result, *phrases)
    assert result.code == 2
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlruns.db").exists()


@pytest.mark.parametrize("args, phrase", [
    (["--trials", "0"], "trials: must be an integer >= 1, got 0"),
    (["--reduction-factor", "1"], "reduction_factor: must be an integer >= 2"),
    (["--search", "grid"], "search: must be one of optuna, random"),
    (["--epochs", "2", "--grace-period", "2"], "grace_period: 2 epochs leaves ASHA nothing to stop in 2 epochs"),
    (["--epochs", "2", "--max-epochs", "3"], "max_epochs: 3 is more than the trials' --epochs 2"),
    (["--space", "nowhere.yaml"], "nowhere.yaml: search space file not found"),
    (["--workers", "2"], "No such option: --workers"),
    (["--register", "my model"], "--register 'my model': use letters, digits"),
])
def test_impossible_options_are_one_line(cli, data, args, phrase):
    one_error_line(cli("tune", "--data", data, "--val-data", data, *args), phrase)


def test_a_search_needs_validation_data(cli, data):
    one_error_line(cli("tune", "--data", data, "--register", "shapes"), "--register needs --val-data")
    one_error_line(cli("tune", "--data", data), "a search needs --val-data")
    one_error_line(cli("tune", "--val-data", data), "--data is required")


def test_config_file_and_resume_errors_name_the_problem(cli, tmp_path, data):
    (tmp_path / "c.yaml").write_text(f"data: {data}\nval_data: {data}\ntrails: 3\n")
    one_error_line(cli("tune", "--config", "c.yaml"), "c.yaml: unknown key 'trails'")
    (tmp_path / "w.yaml").write_text(f"data: {data}\nnum_workers: 2\n")
    one_error_line(cli("tune", "--config", "w.yaml"), "num_workers is set per trial by workers_per_trial")
    (tmp_path / "plain").mkdir()
    one_error_line(cli("tune", "--resume", "plain"), "plain: not a search directory written by centernet tune")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_routes_a_search_with_the_path_checks_of_training(cli):
    address = f"http://127.0.0.1:{_closed_port()}"
    one_error_line(cli("submit", "--address", address, "--", "tune", "--data", "/nfs/x", "--val-data", "/nfs/v"),
                   "--storage-path")
    one_error_line(cli("submit", "--address", address, "--", "tune", "--data", "/nfs/x", "--val-data", "/nfs/v",
                       "--space", "space.yaml", "--storage-path", "/nfs/r"), "--space space.yaml", "absolute path")
    # checks passed: it goes as far as the (absent) cluster
    one_error_line(cli("submit", "--address", address, "--", "tune", "--data", "/nfs/x", "--val-data", "/nfs/v",
                       "--storage-path", "/nfs/r"), f"cannot reach the Ray cluster at {address}")
    one_error_line(cli("submit", "--address", address, "--", "tune", "--resume", "/nfs/r/search"),
                   f"cannot reach the Ray cluster at {address}")
