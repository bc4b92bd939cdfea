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

    def one_error_line(self, *phrases: str) -> str:
        """Assert a failure reported as one ``error: ...`` line naming every phrase; return the line."""
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        assert self.code != 0
        assert "Traceback" not in self.err
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        for phrase in phrases:
            assert phrase in lines[0], lines[0]
        return lines[0]


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
