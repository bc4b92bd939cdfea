"""The whole path on real services, each its own process on 127.0.0.1, through the CLI as a user
types it: PostgreSQL, an S3 server with a bucket, ``mlflow server`` on both, and a two-node Ray
cluster whose nodes know none of them (settings reach the workers through the job's runtime env).

precompute (Ray tasks on the cluster) -> shards in ``s3://`` -> train (2 workers, one per node: each
node has 1 CPU and each worker takes 1) with checkpoints in ``s3://`` -> register -> a process whose
environment holds only the tracking URI and the S3 settings predicts with ``models:/NAME@champion``.

Then the same path as one pipeline (``centernet run --address``) on that cluster, its Tune search
included, with the shards and the results directory (Prefect's cache records, the evaluation
report, the predictions) in ``s3://`` and the checkpoints on a path every node sees (the first test
has them in ``s3://``): a rerun from another Prefect home (as another machine would) finds every
step cached there, except the one whose output was deleted.
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
STEP_LINE = re.compile(r"^(synthesize|precompute train|precompute val|tune|train|register|evaluate|predict):\s+"
                       r"(cached|done)", re.M)
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


def pipeline_config(s3, local: Path) -> dict:
    """A tiny pipeline with its shards and results in ``s3://``, its synthetic images and checkpoints
    under ``local`` (seen by every node of the one-machine cluster); the search: 2 random trials at
    once (one per node), FIFO (no trial stopped early)."""
    size = {"sample": {"input_size": [64, 64]}, "augment": False}
    return {
        "name": "e2e-flow", "results": s3.uri("flow/results"), "retry_delay_s": 0,
        "data": {"synthetic": {"train_images": 16, "val_images": 4, "seed": 3}, "dir": str(local / "data"),
                 "shards": s3.uri("flow/shards"), "chunk_size": 8, "workers": 2},
        "precompute": {"train": size, "val": size},
        "train": {"arch": "resnet18", "pretrained": "none", "num_workers": 1, "batch_size": 4, "epochs": 1,
                  "max_steps_per_epoch": 2, "lr": 1e-3, "loader_workers": 0, "preview_images": 0,
                  "storage_path": str(local / "ray_results"), "experiment": "e2e-flow"},
        "tune": {"trials": 2, "max_concurrent": 2, "search": "random", "scheduler": "fifo"},
        "register": {"name": "e2e-flow-shapes"},
        "evaluate": {"batch_size": 4},
        "predict": {"images": 2},
    }


def test_pipeline_with_its_search_on_the_cluster_keeps_its_results_in_s3(mlflow_stack, two_node_ray, tmp_path):
    import yaml

    s3 = mlflow_stack.s3
    (tmp_path / "flow.yaml").write_text(yaml.safe_dump(pipeline_config(s3, tmp_path)))
    env = mlflow_stack.subprocess_env({"PREFECT_HOME": str(tmp_path / "prefect")})
    began = time.monotonic()
    first = _cli("run", "flow.yaml", "--address", two_node_ray.address, "--no-progress", env=env, cwd=tmp_path,
                 timeout=900)
    first_s = time.monotonic() - began
    steps = dict(STEP_LINE.findall(first.stdout + first.stderr))
    assert list(steps) == ["synthesize", "precompute train", "precompute val", "tune", "train", "register",
                           "evaluate", "predict"] and set(steps.values()) == {"done"}, first.stdout + first.stderr

    def keys(prefix: str) -> set[str]:
        listing = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"].removeprefix(prefix) for o in listing}

    results = keys("flow/results/e2e-flow/")
    assert {"evaluation.json", "predictions/predictions.png", "predictions/detections.json"} <= results
    assert {k.split("-")[0] for k in results if k.startswith("cache/") and "-" in k} >= {
        "cache/synthesize", "cache/precompute", "cache/tune", "cache/train", "cache/register", "cache/evaluate",
        "cache/predict"}
    assert list((tmp_path / "ray_results").glob("e2e-flow-*/epoch_0000/checkpoint.pt"))
    report = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="flow/results/e2e-flow/evaluation.json")["Body"]
                        .read())
    assert report["flip"] is True and report["images"] == 4

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_stack.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("e2e-flow").experiment_id])
    kinds = {r.info.run_id: r.data.tags.get("centernet.kind") for r in runs}
    pipeline = next(r for r in runs if kinds[r.info.run_id] == "pipeline")
    search = next(r for r in runs if kinds[r.info.run_id] == "tune")
    assert search.data.tags["mlflow.parentRunId"] == pipeline.info.run_id
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
    assert len(trials) == 2
    final = [r for r in runs if kinds[r.info.run_id] == "train"
             and r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id]
    assert len(final) == 1
    best = next(r for r in trials if r.info.run_id == search.data.params["best.run_id"])
    weights = ("loss_weights.hm", "loss_weights.wh", "loss_weights.reg", "lr")
    assert {k: final[0].data.params.get(k) for k in weights} == {k: best.data.params.get(k) for k in weights}

    # another machine's view: a new Prefect home; the cache records are read from s3, and the deleted
    # predictions picture makes its step run again
    s3.client().delete_object(Bucket=s3.bucket, Key="flow/results/e2e-flow/predictions/predictions.png")
    env["PREFECT_HOME"] = str(tmp_path / "prefect-elsewhere")
    began = time.monotonic()
    again = _cli("run", "flow.yaml", "--address", two_node_ray.address, "--no-progress", env=env, cwd=tmp_path)
    again_s = time.monotonic() - began
    steps = dict(STEP_LINE.findall(again.stdout + again.stderr))
    assert [s for s, how in steps.items() if how == "done"] == ["predict"], again.stdout + again.stderr
    assert "predictions/predictions.png is gone: running it again" in again.stderr
    assert len(steps) == 8 and "predictions.png" in keys("flow/results/e2e-flow/predictions/")
    print(f"\npipeline on the cluster, results in s3: first run {first_s:.1f} s, rerun {again_s:.1f} s\n"
          + "\n".join(line for line in first.stderr.splitlines() if STEP_LINE.match(line)))
