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


def _jobs_api_answers(address: str, env: dict[str, str]) -> bool:
    """Whether the head's Jobs API answers, asked from a fresh interpreter: a Ray client inside
    this test process may hold authentication state from the suite's earlier local instances."""
    probe = f"from workflows.ray_runtime import jobs_client; jobs_client({address!r}).list_jobs()"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=60).returncode == 0


def _job_status(head: str, job_id: str, env: dict[str, str]) -> str:
    """``centernet submit --status`` of a job: "<id>: STATUS ..." -> STATUS."""
    out = subprocess.run([str(BIN / "centernet"), "submit", "--address", head, "--status", job_id],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split(":", 1)[1].split()[0]


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
def head():
    """A Ray head in its own process group (ports all distinct), killed by group id afterwards —
    `ray stop` would stop every Ray instance on the machine. Ray 2.60 turns token authentication
    on for new clusters: the head and the CLI processes share a token file of the test's own, given
    to them through their environment only (this process's Ray state is left alone). Yields the
    dashboard address and that environment.
    A head that exits while starting (e.g. a free port taken meanwhile) is retried once on new ports."""
    temp_dir = tempfile.mkdtemp(prefix="rsub")
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    procs = []
    try:
        for attempt in range(2):
            proc, address, log = _start_head(temp_dir, env)
            procs.append(proc)
            deadline = time.monotonic() + 180
            while proc.poll() is None and time.monotonic() < deadline:
                if _jobs_api_answers(address, env):
                    break
                time.sleep(1)
            else:
                _stop(proc)
                if attempt == 1:
                    raise RuntimeError(f"ray head did not come up; its output:\n{log.read_text()[-3000:]}")
                continue
            break
        yield address, env
    finally:
        for proc in procs:
            _stop(proc)


def test_submit_training_job(head, tmp_path):
    head, head_env = head
    data = make_synthetic_coco(tmp_path / "coco", 8, seed=0, image_size=(96, 128))
    pre = subprocess.run([str(BIN / "centernet"), "precompute", "--images", str(data.images_dir),
                          "--annotations", str(data.annotations), "--out", str(tmp_path / "train"),
                          "--input-size", "64", "--workers", "1", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert pre.returncode == 0, pre.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**head_env, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "centernet"), "submit", "--address", head, "--", "--data", str(tmp_path / "train"),
           "--arch", "resnet18", "--pretrained", "none", "--epochs", "1", "--batch-size", "4", "--workers", "1",
           "--loader-workers", "0", "--storage-path", str(tmp_path / "results"), "--name", "submitted",
           "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 240
    while (final := _job_status(head, job_id, env)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, f"job {job_id} still {final} after 240 s"
        time.sleep(2)
    logs = subprocess.run([str(BIN / "centernet"), "submit", "--address", head, "--logs", job_id],
                          env=env, capture_output=True, text=True, timeout=60)
    assert final == "SUCCEEDED", logs.stdout[-3000:]
    runs = find_runs(uri, filter_string="attributes.run_name = 'submitted'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["arch"] == "resnet18"
    assert runs[0].data.tags["git_commit"] not in ("", "unknown")  # passed along by submit
    assert runs[0].data.metrics["loss/total"] > 0
    unknown = subprocess.run([str(BIN / "centernet"), "submit", "--address", head, "--status", "raysubmit_nope"],
                             env=env, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in unknown.stderr.splitlines() if ln.strip()]
    assert unknown.returncode != 0 and len(lines) == 1, unknown.stderr
    assert lines[0] == f"error: no job 'raysubmit_nope' on the cluster at {head}"
