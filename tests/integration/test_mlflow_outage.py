"""The MLflow server dies during training and comes back: training goes on, and the run's metrics
are complete afterwards (rank 0's :class:`workflows.tracking.RunLogger` keeps what the server did not
take and sends it when the server answers again). A server that stays away is a one-line error.

Each test has its own ``mlflow server`` (killed with SIGKILL, restarted on the same port) on the
session's PostgreSQL and S3 server; MLflow's HTTP retries are cut short so that its client gives up
within seconds and the logger's own retries are what carries the metrics over the outage.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from centernet.synthetic import make_synthetic_coco

pytest_plugins = ["services"]  # fixtures: s3, mlflow_stack (tests/integration/services.py)
pytestmark = pytest.mark.timeout(900)

CLI = str(Path(sys.executable).with_name("centernet"))
# each request: 1 try + 1 retry after ~1 s, instead of MLflow's default ~4 min of retries
FAST_FAILING = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@pytest.fixture
def own_server(mlflow_stack, services_root, request):
    """An MLflow server of this test's own (the session's stack stays up) on the stack's stores."""
    import services

    root = services_root / f"outage-{request.node.name[:40]}"
    root.mkdir()
    server = services.MlflowServer(root, mlflow_stack.postgres, mlflow_stack.s3, artifacts_prefix="outage")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _metric_steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_training_survives_the_server_being_killed_and_restarted(own_server, mlflow_stack, tmp_path):
    from mlflow.tracking import MlflowClient

    data = make_synthetic_coco(tmp_path / "coco", 16, seed=6, image_size=(64, 80), object_size=(20, 40),
                               objects_per_image=(1, 1), category_ids=(1, 2))
    experiment = f"outage-{time.time_ns()}"
    env = mlflow_stack.subprocess_env({"MLFLOW_TRACKING_URI": own_server.tracking_uri, **FAST_FAILING})
    steps_per_epoch, epochs = 16, 2  # batch 1: 16 steps an epoch
    train = subprocess.Popen(
        [CLI, "train", "--data", str(data.images_dir.parent), "--arch", "resnet18", "--pretrained", "none",
         "--input-size", "64", "--epochs", str(epochs), "--batch-size", "1", "--lr", "1e-3", "--workers", "1",
         "--loader-workers", "0", "--storage-path", str(tmp_path / "results"), "--name", "outage",
         "--experiment", experiment, "--no-progress"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = MlflowClient(own_server.tracking_uri)
        deadline = time.monotonic() + 600
        run_id = None
        while run_id is None or not client.get_metric_history(run_id, "loss/total"):  # rank 0 is logging
            assert train.poll() is None, f"training ended before the outage: {train.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "no step metrics in MLflow after 600 s"
            exp = client.get_experiment_by_name(experiment)
            runs = client.search_runs([exp.experiment_id]) if exp else []
            run_id = runs[0].info.run_id if runs else None
            time.sleep(0.2)
        killed_ms = int(time.time() * 1000)
        own_server.kill()
        time.sleep(8)
        own_server.start()
        back_ms = int(time.time() * 1000)
        out, err = train.communicate(timeout=600)
    finally:
        if train.poll() is None:
            train.kill()
            train.communicate()
    assert train.returncode == 0, err[-4000:]
    assert re.search(r"mlflow: +run (\w+)", out).group(1) == run_id

    client = MlflowClient(own_server.tracking_uri)  # a new connection to the restarted server
    total = steps_per_epoch * epochs
    assert client.get_run(run_id).info.status == "FINISHED"
    # every step's metrics (log_every 1), each once, and the epochs' metrics
    history = client.get_metric_history(run_id, "loss/total")
    assert sorted(m.step for m in history) == list(range(1, total + 1))
    assert _metric_steps(client, run_id, "train/total") == [steps_per_epoch, total]
    # steps were taken (and stamped) while the server was down: training did not wait for it
    assert any(killed_ms < m.timestamp < back_ms for m in history)
    assert "checkpoint/checkpoint.pt" in {f.path for f in client.list_artifacts(run_id, "checkpoint")}


def test_a_server_that_stays_away_keeps_the_metrics_for_the_caller(own_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    from workflows.tracking import RunLogger, finish_run, start_run

    for key, value in FAST_FAILING.items():
        monkeypatch.setenv(key, value)
    uri = own_server.tracking_uri
    run_id = start_run(uri, experiment="outage-logger", run_name="stays-away", params={}, tags={})
    logger = RunLogger(uri, run_id, flush_every=2, retry_interval_s=0.5)
    logger.log_metrics({"loss": 4.0}, step=1, flush=True)
    assert logger.flush(timeout_s=60)  # the server is up: sent

    own_server.kill()
    began = time.monotonic()
    for step in (2, 3, 4):
        logger.log_metrics({"loss": 4.0 / step, "lr": float("nan")}, step=step)  # NaN: left out
    logger.log_metrics({"loss": 0.5}, step=5, flush=True)
    assert time.monotonic() - began < 1.0  # the caller does not wait for the server
    assert not logger.flush(timeout_s=3)  # nothing can be sent ...
    unsent = logger.close(timeout_s=1)  # ... and comes back to the caller, in order
    assert [(m.key, m.step, m.value) for m in unsent] == [("loss", 2, 2.0), ("loss", 3, 4.0 / 3), ("loss", 4, 1.0),
                                                          ("loss", 5, 0.5)]
    assert "Connection refused" in logger.last_error or "Max retries exceeded" in logger.last_error

    own_server.start()  # the driver logs them when it closes the run
    finish_run(uri, run_id, late_metrics=unsent, metrics={"val/AP": 0.25})
    client = MlflowClient(uri)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss")) == [
        (1, 4.0), (2, 2.0), (3, 4.0 / 3), (4, 1.0), (5, 0.5)]
    assert client.get_run(run_id).data.metrics["val/AP"] == 0.25
    assert client.get_run(run_id).info.status == "FINISHED"


def test_closing_a_run_on_a_dead_server_is_one_line(own_server, monkeypatch):
    from workflows.errors import JobFailed
    from workflows.tracking import start_run
    from workflows.train import close_run

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run_id = start_run(own_server.tracking_uri, experiment="outage-close", run_name="dead", params={}, tags={})
    own_server.kill()
    with pytest.raises(JobFailed) as failed:
        close_run(own_server.tracking_uri, run_id, [], [], "s3://centernet/ray_results/x/checkpoint.pt")
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"training finished (s3://centernet/ray_results/x/checkpoint.pt), but MLflow at "
                              f"{own_server.tracking_uri} did not take run {run_id}'s results: ")


def test_train_against_a_server_that_is_down_fails_in_one_line(mlflow_stack, tmp_path):
    import services

    data = make_synthetic_coco(tmp_path / "coco", 2, seed=1, image_size=(64, 64))
    dead = f"http://127.0.0.1:{services.free_port()}"
    env = mlflow_stack.subprocess_env({"MLFLOW_TRACKING_URI": dead, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    done = subprocess.run([CLI, "train", "--data", str(data.images_dir.parent), "--pretrained", "none",
                           "--input-size", "64", "--epochs", "1", "--no-progress"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow at {dead} does not answer ("), done.stderr
    assert lines[0].endswith("start it or set MLFLOW_TRACKING_URI to a running server")
