"""The whole path on real services, each its own process on 127.0.0.1, through the CLI as a user
types it: PostgreSQL, an S3 server with a bucket, ``mlflow server`` on both, and a two-node Ray
cluster whose nodes know none of them (settings reach the workers through the job's runtime env).

precompute (Ray tasks on the cluster) -> shards in ``s3://`` -> train (2 workers, one per node: each
node has 1 CPU and each worker takes 1) with checkpoints in ``s3://`` -> register -> a process whose
environment holds only the tracking URI and the S3 settings predicts with ``models:/NAME@champion``.
"""

from __future__ import annotations

import json
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
IMAGES = 24
CATEGORY_IDS = (2, 7, 90)
MODEL = "e2e-shapes"


@pytest.fixture(scope="module")
def two_node_ray(services_root):
    """Two Ray nodes (1 CPU each) on loopback, started without any MLflow or S3 settings."""
    import services

    root = services_root / "r2"  # short: Ray's socket paths below it have a 107-byte limit
    root.mkdir()
    with services.ray_cluster(root, nodes=2, cpus_per_node=1) as cluster:
        yield cluster


def _cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"centernet {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_precompute_train_register_predict_on_real_services(mlflow_stack, two_node_ray, tmp_path):
    timings: dict[str, float] = {"services (s3, postgres, mlflow)": sum(mlflow_stack.started_in_s.values())}
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        timings[name] = now - clock[0]
        clock[0] = now

    s3 = mlflow_stack.s3
    data = make_synthetic_coco(tmp_path / "coco", IMAGES, seed=4, image_size=(64, 80), object_size=(20, 40),
                               objects_per_image=(1, 2), category_ids=CATEGORY_IDS)
    env = mlflow_stack.subprocess_env()  # what the user's shell exports: tracking URI, S3 credentials/endpoint
    shards, results = s3.uri("e2e/shards"), s3.uri("e2e/ray_results")
    address = two_node_ray.address

    # on a cluster local inputs must be absolute paths every node sees (here: the one machine's /tmp)
    _cli("precompute", "--images", str(data.images_dir), "--annotations", str(data.annotations), "--out", shards,
         "--input-size", "64", "--no-augment", "--chunk-size", "8", "--workers", "2", "--address", address,
         "--quiet", env=env, cwd=tmp_path)
    lap("precompute (cluster -> s3)")
    manifest = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="e2e/shards/manifest.json")["Body"].read())
    assert manifest["num_samples"] == IMAGES and len(manifest["shards"]) == 3

    train = _cli("train", "--data", shards, "--val-data", shards, "--arch", "resnet18", "--pretrained", "none",
                 "--epochs", "1", "--batch-size", "4", "--max-steps", "3", "--lr", "1e-3", "--workers", "2",
                 "--loader-workers", "0", "--storage-path", results, "--name", "e2e", "--address", address,
                 "--no-progress", env=env, cwd=tmp_path)
    lap("train (2 nodes, s3 shards and checkpoints)")
    run_id = re.search(r"mlflow: +run (\w+)", train.stdout).group(1)
    checkpoint = re.search(r"checkpoint: +(\S+)", train.stdout).group(1)
    assert checkpoint.startswith(f"{results}/e2e/") and checkpoint.endswith("/checkpoint.pt")
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="e2e/ray_results/e2e/")["Contents"]}
    assert checkpoint.removeprefix(f"s3://{s3.bucket}/") in keys

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_stack.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["num_workers"] == "2"
    # rank 0 logged every step (3 steps: 24 images / 2 workers / batch 4) and the epoch through the server
    assert [m.step for m in client.get_metric_history(run_id, "loss/total")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run_id, "train/total")] == [3]
    assert 0.0 <= run.data.metrics["val/AP"] <= 1.0
    assert "checkpoint/checkpoint.pt" in {f.path for f in client.list_artifacts(run_id, "checkpoint")}

    register = _cli("register", "--run", run_id, "--name", MODEL, env=env, cwd=tmp_path)
    lap("register")
    assert "champion" in register.stdout

    # a fresh process: the tracking URI and S3 settings, nothing else of this environment
    home = tmp_path / "home"
    home.mkdir()
    clean = mlflow_stack.subprocess_env({"HOME": str(home)}, inherit=False)
    assert {k for k in clean if k.startswith(("MLFLOW_", "AWS_"))} == {
        "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_DISABLE_TELEMETRY", "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_EC2_METADATA_DISABLED"}
    predict = _cli("predict", "--model", f"models:/{MODEL}@champion", "--images", "coco/images", "--out", "predictions",
                   "--threshold", "0.0", "--workers", "0", "--no-draw", env=clean, cwd=tmp_path)
    lap("predict (models:/…@champion, clean env)")
    assert predict.stdout.startswith(f"{IMAGES} images, ")
    detections = json.loads((tmp_path / "predictions" / "detections.json").read_text())
    assert {Path(d["file_name"]).name for d in detections} == {p.name for p in data.images_dir.iterdir()}
    assert {d["category_id"] for d in detections} <= set(CATEGORY_IDS)

    print("\nreal-services e2e timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
