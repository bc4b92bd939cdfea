"""The search's progress line and failed-trial text, from hand-made trial tables."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from workflows.tune_callback import error_text, finished_trials, trials_line


def board(*rows: tuple[str, str, float | None]) -> dict:
    return {"progress": {"trials": [{"trial_id": t, "state": s, "epochs_done": 1, "val_AP": ap} for t, s, ap in rows]}}


def test_trials_line_counts_states_and_names_the_best_trial():
    state = board(("a", "running", 0.02), ("b", "completed", 0.05), ("c", "stopped_early", 0.01),
                  ("d", "pending", None), ("e", "failed", None))
    assert trials_line(state) == "1 running, 1 done, 1 stopped, 1 failed, 1 pending; best val AP 0.0500 (b)"
    assert finished_trials(state) == 3  # done, stopped, failed


def test_trials_line_before_any_evaluation():
    state = board(("a", "running", None), ("b", "pending", None))
    assert trials_line(state) == "1 running, 0 done, 1 pending"
    assert finished_trials(state) == 0


def test_error_text_is_the_root_error_of_the_trials_error_file(tmp_path: Path):
    local, stored = tmp_path / "session", tmp_path / "search" / "trial_1"
    local.mkdir()
    stored.mkdir(parents=True)
    (local / "error.txt").write_text("Traceback (most recent call last):\n  File 'x.py'\nValueError: loss is NaN\n\n")
    trial = SimpleNamespace(error_file=str(local / "error.txt"), path=None)
    assert error_text(trial) == f": ValueError: loss is NaN ({local / 'error.txt'})"
    # the copy in the search's trial directory is preferred (the session's goes with Ray)
    (stored / "error.txt").write_text("Failure # 1\n  raise result.error\nray.train.ControllerError: Training failed:\n"
                                      "2 worker(s) were killed due to the node running low on memory.\n"
                                      "Object store memory usage: [- objects spillable: 3\n")
    trial.path = str(stored)
    assert error_text(trial) == (": ray.train.ControllerError: Training failed: 2 worker(s) were killed due to the "
                                 f"node running low on memory. ({stored / 'error.txt'})")
    assert error_text(SimpleNamespace(error_file=None, path=None)) == ": no error recorded"
    assert error_text(SimpleNamespace(error_file=str(tmp_path / "gone.txt"), path=None)) == ": no error recorded"
