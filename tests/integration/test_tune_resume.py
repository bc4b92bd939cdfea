"""A search killed mid-way (SIGKILL to `centernet tune` and everything it started, as a crashed
machine would) continues with `centernet tune --resume DIR`: it completes, MLflow holds exactly one
run per trial, and trials that had ended are neither rerun nor logged twice."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tune_data import TRIAL_OPTIONS, cli_flags, make_shards
from workflows.tracking import client, find_runs

pytestmark = pytest.mark.timeout(600)
CLI = str(Path(sys.executable).with_name("centernet"))
TRIALS, EPOCHS, STEPS = 3, 2, 2  # 3: on a fast machine Tune's saved state can lag a trial behind


def ended_trials(search_dir: Path) -> set[str]:
    """Trials Tune's newest saved experiment state records as ended."""
    files = sorted(glob.glob(str(search_dir / "experiment_state-*.json")))
    if not files:
        return set()
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (OSError, ValueError):  # being rewritten
        return set()
    trials = [json.loads(entry[0]) for entry in state["trial_data"]]
    return {t["trial_id"] for t in trials if t["status"] in ("TERMINATED", "ERROR")}


def trial_runs(uri: str) -> dict[str, object]:
    return {r.data.tags["centernet.trial_id"]: r for r in find_runs(uri) if "centernet.trial_id" in r.data.tags}


def test_killed_search_resumes_without_rerunning_or_relogging(tmp_path):
    train_dir, val_dir = make_shards(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    options = {**TRIAL_OPTIONS, "max_steps_per_epoch": STEPS}
    search_dir = tmp_path / "results" / "killed"
    # paths relative to the directory the command is typed in (tmp_path, not the project's)
    args = [CLI, "tune", "--data", os.path.relpath(train_dir, tmp_path), "--val-data",
            os.path.relpath(val_dir, tmp_path), "--epochs", str(EPOCHS), *cli_flags(options), "--trials", str(TRIALS),
            "--max-concurrent", "1", "--search", "random", "--scheduler", "fifo", "--name", "killed",
            "--storage-path", "results", "--no-progress"]
    # Tune saves its experiment state at most every max(10 s, 19 x the last save's time): on a busy
    # machine the second trial could end before the state shows the first ended. Once a second here.
    first_env = {**env, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen(args, cwd=tmp_path, env=first_env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = time.monotonic() + 300
        while not ended_trials(search_dir):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial ended within 300 s"
            time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)  # the driver, its Ray instance and every worker
        first.wait(timeout=60)
    ended = ended_trials(search_dir)
    assert 1 <= len(ended) < TRIALS  # interrupted mid-way
    before = trial_runs(uri)
    assert ended <= set(before)

    second = subprocess.run([CLI, "tune", "--resume", "results/killed", "--no-progress"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing:" in second.stderr and f"trials:     {TRIALS} ({TRIALS} done" in second.stdout

    after = trial_runs(uri)
    assert len(after) == TRIALS  # exactly one run per trial, none lost, none doubled
    parents = [r for r in find_runs(uri) if r.data.tags.get("centernet.kind") == "tune"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    c = client(uri)
    for trial_id, run in after.items():
        assert run.info.status == "FINISHED" and run.data.tags["centernet.trial_state"] == "completed"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {a.path for a in c.list_artifacts(run.info.run_id, "checkpoint")} == {"checkpoint/checkpoint.pt"}
        assert len(c.get_metric_history(run.info.run_id, "train/total")) <= EPOCHS
    for trial_id in ended:
        old, new = before[trial_id], after[trial_id]
        assert new.info.run_id == old.info.run_id and new.info.end_time == old.info.end_time  # not reopened
        assert len(c.get_metric_history(new.info.run_id, "loss/total")) == EPOCHS * STEPS  # not rerun
        assert len(c.get_metric_history(new.info.run_id, "train/total")) == EPOCHS
