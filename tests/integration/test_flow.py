"""`centernet run`: the pipeline as a Prefect flow on its ephemeral API (SQLite in a temporary
PREFECT_HOME), real Ray, real MLflow (SQLite), tiny synthetic data at input 64.

One working directory for the module, in order: a run killed during training and rerun (the data
steps come from the cache, training resumes from its checkpoint, one registered version); the same
config again (every step cached, a fraction of the time); one more epoch (training and the steps
after it rerun, the data steps cached); a transient failure retried; a config error before any step.
(A deleted output making its cached step run again: tests/integration/test_real_services_e2e.py, on
a results directory in s3://, and tests/unit/test_remote_results.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(1200)
BIN = Path(sys.executable).parent
TINY = {
    "name": "tiny",
    "results": "results",
    "retry_delay_s": 0,
    "data": {"synthetic": {"train_images": 16, "val_images": 6, "seed": 0}, "dir": "data", "shards": "shards",
             "chunk_size": 8, "workers": 1},
    "precompute": {"train": {"sample": {"input_size": [64, 64]}}, "val": {"sample": {"input_size": [64, 64]},
                                                                          "augment": False}},
    "train": {"arch": "resnet18", "pretrained": "none", "num_workers": 1, "batch_size": 8, "epochs": 3,
              "loader_workers": 0, "preview_images": 0, "storage_path": "ray_results", "experiment": "flow-test"},
    "register": {"name": "tiny-shapes"},
    "evaluate": {"batch_size": 4},
    "predict": {"images": 2},
}
STEP_LINE = re.compile(r"^(synthesize|precompute train|precompute val|tune|train|register|evaluate|predict):\s+"
                       r"(cached|done)", re.M)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flow")
    (path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return path


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", PREFECT_HOME=str(workdir / "prefect"), **extra)
    return env


def run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "centernet"), "run", "tiny.yaml", *args], cwd=workdir, env=env or _env(workdir),
                          capture_output=True, text=True, timeout=900)
    return done, time.perf_counter() - start


def steps_of(output: str) -> dict[str, str]:
    return dict(STEP_LINE.findall(output))


def pipeline_seconds(output: str) -> float:
    return float(re.search(r"^pipeline tiny: .* (\d+) s \(steps", output, re.M).group(1))


def registered_versions(workdir: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")
    return sorted(str(v.version) for v in client.search_model_versions("name='tiny-shapes'"))


def test_killed_during_training_resumes_from_its_checkpoint(workdir):
    proc = subprocess.Popen([str(BIN / "centernet"), "run", "tiny.yaml"], cwd=workdir, env=_env(workdir),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed = False
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            # the first epoch's checkpoint registered by Ray Train: kill everything the run started
            snapshots = list((workdir / "ray_results").glob("tiny-*/checkpoint_manager_snapshot.json"))
            if snapshots and "epoch_0000" in snapshots[0].read_text():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        first_output = proc.communicate(timeout=60)[0]
    assert killed, f"never saw the first checkpoint\n{first_output[-3000:]}"
    assert registered_versions(workdir) == []

    done, _ = run(workdir)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    steps = steps_of(output)
    assert steps["synthesize"] == steps["precompute train"] == steps["precompute val"] == "cached", output
    assert steps["train"] == steps["register"] == steps["evaluate"] == steps["predict"] == "done", output
    # continued after the registered first epoch (from epoch 2 or, if the kill came late, 3), not epoch 1
    assert re.search(r"^train: .*resumed at epoch [23], ran to epoch 3 of 3", output, re.M), output
    assert registered_versions(workdir) == ["1"]


def test_rerun_of_the_same_config_is_cached(workdir):
    first, first_wall = run(workdir, "--from", "register")  # register, evaluate and predict really run
    assert first.returncode == 0, first.stderr[-3000:]
    done, wall = run(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    steps = steps_of(output)
    assert len(steps) == 7 and set(steps.values()) == {"cached"}, output
    assert "7 cached" in output
    # the flow itself: every step skipped; the command: Prefect's start-up is what is left
    assert pipeline_seconds(output) <= 0.2 * max(pipeline_seconds(first.stdout + first.stderr), 5)
    assert wall < first_wall
    assert registered_versions(workdir) == ["1", "2"]  # --from register made version 2; the cached run none


def test_more_epochs_rerun_training_and_what_follows(workdir):
    done, _ = run(workdir, "--set", "train.epochs=4")
    assert done.returncode == 0, done.stderr[-3000:]
    steps = steps_of(done.stdout + done.stderr)
    assert [s for s, how in steps.items() if how == "cached"] == ["synthesize", "precompute train", "precompute val"]
    assert [s for s, how in steps.items() if how == "done"] == ["train", "register", "evaluate", "predict"]
    evaluation = json.loads((workdir / "results" / "tiny" / "evaluation.json").read_text())
    assert evaluation["flip"] is True and evaluation["images"] == 6
    assert (workdir / "results" / "tiny" / "predictions" / "predictions.png").is_file()


def test_pipeline_run_is_the_mlflow_parent_of_the_step_runs(workdir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")
    exp = client.get_experiment_by_name("flow-test")
    runs = client.search_runs([exp.experiment_id])
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("centernet.kind") == "pipeline"}
    assert len(parents) >= 4 and all(r.data.tags.get("prefect.flow_run_id") for r in parents.values())
    nested = [r for r in runs if r.data.tags.get("centernet.kind") in ("train", "evaluation")]
    assert nested and all(r.data.tags.get("mlflow.parentRunId") in parents for r in nested)
    assert {r.data.tags["centernet.kind"] for r in nested} == {"train", "evaluation"}
    assert any(r.data.params.get("train.epochs") == "4" for r in parents.values())


def test_transient_failure_is_retried(workdir):
    marker = workdir / "failed-once"
    done, _ = run(workdir, "--only", "evaluate",
                  env=_env(workdir, CENTERNET_FLOW_FAIL_ONCE=f"evaluate:{marker}", PREFECT_LOGGING_LEVEL="INFO"))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert marker.is_file()  # the first attempt failed
    assert "Retry 1/2" in output and steps_of(output)["evaluate"] == "done", output[-3000:]


def test_unknown_key_fails_before_any_step(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epoch": 2}, "results": "bad_results"}))
    done = subprocess.run([str(BIN / "centernet"), "run", "bad.yaml"], cwd=workdir, env=_env(workdir),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown key 'epoch'" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (workdir / "bad_results").exists()
