"""Fixtures of the contract tests."""

from __future__ import annotations

import logging
import warnings
from typing import NamedTuple

import pytest

from workflows.cli import main


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch, tmp_path, capfd):
    """``cli(*argv) -> CliResult`` through ``workflows.cli.main`` (as the console script), run in
    ``tmp_path`` as the working directory with MLflow in a SQLite file there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")

    def run(*argv: str) -> CliResult:
        capfd.readouterr()
        with warnings.catch_warnings():
            try:
                main(list(argv))
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    yield run
    for name in ("mlflow", "ray", "centernet", "optuna"):  # main() configured these for a user's run
        logging.getLogger(name).setLevel(logging.NOTSET)
