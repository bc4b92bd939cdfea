"""`centernet submit`: a real head (`ray start --head` with the dashboard on loopback), a short
training job through the Ray Jobs API, SUCCEEDED, and its MLflow run; the head is stopped after."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import precompute
from pipeline.schema import PrecomputeSettings
from workflows.ray_runtime import jobs_client, wait_for_job
from workflows.tracking import find_runs

pytestmark = pytest.mark.timeout(400)
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_head(temp_dir: str, env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    """``ray start --head --block`` on 127.0.0.1 with distinct free ports; output to a log file."""
    gcs, dash, agent, agent_grpc, metrics, rt_env, client, nm, om = _free_ports(9)
    log = Path(temp_dir) / f"ray-start-{gcs}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs),
             "--node-ip-address", "127.0.0.1", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
             "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(agent),
             "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
             "--runtime-env-agent-port", str(rt_env), "--ray-client-server-port", str(client),
             "--node-manager-port", str(nm), "--object-manager-port", str(om), "--temp-dir", temp_dir],
            env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{dash}", log


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def head(monkeypatch):
    """A Ray head in its own process group (ports all distinct), killed by group id afterwards —
    `ray stop` would stop every Ray instance on the machine. Ray 2.60 turns token authentication
    on for new clusters: the head, this process and the CLI share a token file of the test's own.
    A head that exits while starting (e.g. a free port taken meanwhile) is retried once on new ports."""
    temp_dir = tempfile.mkdtemp(prefix="rsub")
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    procs = []
    try:
        for attempt in range(2):
            proc, address, log = _start_head(temp_dir, env)
            procs.append(proc)
            deadline = time.monotonic() + 180
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    jobs_client(address).list_jobs()
                    break
                except Exception:
                    time.sleep(1)
            else:
                _stop(proc)
                if attempt == 1:
                    raise RuntimeError(f"ray head did not come up; its output:\n{log.read_text()[-3000:]}")
                continue
            break
        yield address
    finally:
        for proc in procs:
            _stop(proc)


def test_submit_training_job(head, tmp_path):
    data = make_synthetic_coco(tmp_path / "coco", 8, seed=0, image_size=(96, 128))
    precompute(data.images_dir, data.annotations, tmp_path / "train", PrecomputeSettings(input_size=64),
               chunk_size=4, workers=1, progress=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "centernet"), "submit", "--address", head, "--", "--data", str(tmp_path / "train"),
           "--arch", "resnet18", "--epochs", "1", "--batch-size", "4", "--workers", "1",
           "--loader-workers", "0", "--storage-path", str(tmp_path / "results"), "--name", "submitted",
           "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().splitlines()[-1]
    client = jobs_client(head)
    final = wait_for_job(client, job_id, timeout_s=240)
    assert final == "SUCCEEDED", client.get_job_logs(job_id)[-3000:]
    status = subprocess.run([str(BIN / "centernet"), "submit", "--address", head, "--status", job_id],
                            env=env, capture_output=True, text=True, timeout=60)
    assert "SUCCEEDED" in status.stdout
    runs = find_runs(uri, filter_string="attributes.run_name = 'submitted'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["arch"] == "resnet18"
    assert runs[0].data.tags["git_commit"] not in ("", "unknown")  # passed along by submit
    assert runs[0].data.metrics["loss/total"] > 0
