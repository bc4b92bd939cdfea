"""The real-services harness (services.py): an MLflow server on PostgreSQL + S3 used by processes
that know only its address, and pyarrow/shards on the S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from centernet.synthetic import make_synthetic_coco

pytest_plugins = ["services"]  # fixtures: s3, mlflow_stack (tests/integration/services.py)
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(600)

_WRITE_RUN = """
import sys, mlflow
mlflow.set_experiment("services-harness")
with mlflow.start_run(run_name="roundtrip") as run:
    mlflow.log_params({"arch": "resnet18", "lr": "0.001"})
    for step, value in enumerate([0.5, 0.25, 0.125]):
        mlflow.log_metric("loss", value, step=step)
    mlflow.log_artifact(sys.argv[1], artifact_path="files")
print(run.info.run_id)
"""

_READ_RUN = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient()
run = client.get_run(sys.argv[1])
path = client.download_artifacts(sys.argv[1], "files/payload.bin", sys.argv[2])
print(json.dumps({"params": run.data.params, "status": run.info.status, "name": run.info.run_name,
                  "artifact_uri": run.info.artifact_uri, "path": path,
                  "loss": sorted([m.step, m.value] for m in client.get_metric_history(sys.argv[1], "loss"))}))
"""


def _only(env: dict[str, str]) -> dict[str, str]:
    """PATH and ``env``, nothing else."""
    return {"PATH": os.environ.get("PATH", ""), "MLFLOW_DISABLE_TELEMETRY": "true", **env}


def _python(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_run_logged_and_read_back_by_processes_that_know_only_the_server(mlflow_stack, tmp_path):
    payload = os.urandom(50_000)
    (tmp_path / "payload.bin").write_bytes(payload)
    # writer: the tracking URI and the S3 credentials/endpoint only (no inherited environment)
    run_id = _python(_WRITE_RUN, str(tmp_path / "payload.bin"),
                     env=mlflow_stack.subprocess_env({"HOME": str(tmp_path)}, inherit=False))
    # reader: the tracking URI alone; artifacts come through the server's proxy
    got = json.loads(_python(_READ_RUN, run_id, str(tmp_path / "download"),
                             env=_only({"HOME": str(tmp_path), "MLFLOW_TRACKING_URI": mlflow_stack.tracking_uri})))
    assert got["params"] == {"arch": "resnet18", "lr": "0.001"}
    assert got["loss"] == [[0, 0.5], [1, 0.25], [2, 0.125]]
    assert got["status"] == "FINISHED" and got["name"] == "roundtrip"
    assert got["artifact_uri"].startswith("mlflow-artifacts:")  # proxied, not a bucket URL
    assert Path(got["path"]).read_bytes() == payload

    # the artifact is in the bucket under the server's artifacts destination ...
    s3 = mlflow_stack.s3
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="mlartifacts/")["Contents"]]
    key = next(k for k in keys if k.endswith(f"/{run_id}/artifacts/files/payload.bin"))
    assert s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read() == payload
    # ... and the run is in PostgreSQL
    import psycopg

    with psycopg.connect(mlflow_stack.postgres.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, status FROM runs WHERE run_uuid = %s", (run_id,))
        assert cur.fetchall() == [("roundtrip", "FINISHED")]
        cur.execute("SELECT key, value FROM params WHERE run_uuid = %s ORDER BY key", (run_id,))
        assert cur.fetchall() == [("arch", "resnet18"), ("lr", "0.001")]


_PYARROW_ROUNDTRIP = """
import sys
import pyarrow.fs as pafs
fs, path = pafs.FileSystem.from_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
with fs.open_output_stream(path) as out:
    out.write(data)
with fs.open_input_stream(path) as f:
    back = f.read()
print(type(fs).__name__, fs.get_file_info(path).size, back == data)
"""


def test_pyarrow_writes_and_reads_s3_uris_through_the_endpoint_env(s3, tmp_path):
    payload = os.urandom(300_000)
    (tmp_path / "blob").write_bytes(payload)
    out = _python(_PYARROW_ROUNDTRIP, s3.uri("pyarrow/blob.bin"), str(tmp_path / "blob"),
                  env=s3.subprocess_env({"HOME": str(tmp_path)}, inherit=False))
    assert out == f"S3FileSystem {len(payload)} True"
    assert s3.client().get_object(Bucket=s3.bucket, Key="pyarrow/blob.bin")["Body"].read() == payload


def test_shards_precomputed_to_s3_equal_local_ones(s3, tmp_path, monkeypatch):
    data = make_synthetic_coco(tmp_path / "coco", 6, seed=3, image_size=(64, 80))
    outputs = {"local": str(tmp_path / "shards"), "s3": s3.uri("shards/train")}
    for out in outputs.values():
        done = subprocess.run([str(BIN / "centernet"), "precompute", "--images", str(data.images_dir),
                               "--annotations", str(data.annotations), "--out", out, "--input-size", "64",
                               "--workers", "1", "--chunk-size", "4", "--quiet"],
                              env=s3.subprocess_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    for key, value in s3.env.items():  # this process reads the S3 shards through pyarrow as well
        monkeypatch.setenv(key, value)
    from pipeline.reader import iter_samples, read_manifest

    local, remote = read_manifest(outputs["local"]), read_manifest(outputs["s3"])
    assert [(s["file"], s["sha256"]) for s in remote["shards"]] == [(s["file"], s["sha256"]) for s in local["shards"]]
    assert remote["num_samples"] == local["num_samples"] == 6
    pairs = list(zip(iter_samples(outputs["local"]), iter_samples(outputs["s3"]), strict=True))
    assert len(pairs) == 6
    for a, b in pairs:
        assert a["image_id"] == b["image_id"]
        for name in ("image", "hm", "wh", "reg", "ind", "mask", "boxes", "classes"):
            np.testing.assert_array_equal(a[name], b[name])


_KILLED_RUN = """
import contextlib, os, signal, sys
import services
stack = contextlib.ExitStack()
root = stack.enter_context(services.service_dir())
stack.enter_context(services.s3_server(root))
stack.enter_context(services.postgres_server(root, services.find_postgres_bin()))
print(root, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies without any teardown
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_servers_left_by_a_killed_run_are_stopped_and_removed(tmp_path):
    import services  # the plugin's module (already imported by pytest_plugins)

    if services.find_postgres_bin() is None:
        pytest.skip("PostgreSQL server programs not installed")
    env = services.child_env({"PYTHONPATH": str(Path(services.__file__).parent)})
    done = subprocess.run([sys.executable, "-c", _KILLED_RUN], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == -9, done.stderr[-2000:]
    root = Path(done.stdout.strip())
    postmaster = int(next(root.rglob("postmaster.pid")).read_text().splitlines()[0])
    moto = int((root / "moto.log.process").read_text().split()[0])
    assert _running(postmaster) and _running(moto)  # orphans: nothing stopped them

    assert root in services.remove_stale_service_dirs()
    assert not root.exists()
    deadline = time.monotonic() + 30
    while (_running(postmaster) or _running(moto)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(postmaster) and not _running(moto)
