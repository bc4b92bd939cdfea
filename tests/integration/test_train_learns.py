"""`centernet train` learns from scratch with nothing but its defaults: synthetic shapes from the
demo's generator, precomputed into shards, trained on Ray (embedded local instance, 1 worker) by the
command as a user types it, scored by the run's own validation AP in MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_demo import MIN_AP50, SMALL

from workflows.demo import DemoConfig

CENTERNET = str(Path(sys.executable).parent / "centernet")


def make_shards(root: Path, demo: DemoConfig, ray_dir: Path, views: int = 1) -> tuple[Path, Path]:
    """``demo``'s data (generator, sizes, seeds as ``run_demo``) as augmented training shards
    (``views`` copies per image, one read per epoch) and ``--no-augment`` validation shards at
    ``demo.input_size``, made in a local Ray instance kept under ``ray_dir`` (short: Ray's socket
    paths must fit 107 bytes)."""
    from centernet.synthetic import make_synthetic_coco
    from pipeline.precompute import precompute
    from pipeline.ray_local import local_ray
    from pipeline.schema import PrecomputeSettings

    common = dict(image_size=demo.image_size, object_size=demo.object_size,
                  objects_per_image=demo.objects_per_image)
    train = make_synthetic_coco(root / "coco_train", demo.train_images, seed=demo.seed, **common)
    val = make_synthetic_coco(root / "coco_val", demo.val_images, seed=demo.seed + 1, **common)
    with local_ray(num_cpus=2, dashboard=False, temp_dir=str(ray_dir)):
        for name, data, augment in (("train", train, True), ("val", val, False)):
            precompute(data.images_dir, data.annotations, root / name,
                       PrecomputeSettings.of(input_size=demo.input_size, augment=augment, seed=demo.seed,
                                             views=views if augment else 1),
                       chunk_size=32, progress=False)
    return root / "train", root / "val"


def train_ap50(root: Path, demo: DemoConfig, ray_dir: Path, *options: str, views: int = 1) -> float:
    """``centernet train --pretrained none --epochs E`` on ``demo``'s data with its batch size (no
    other training option: lr, warmup, milestones and clipping are the defaults), evaluated once at
    the end (as the demo); ``options``: more flags (``--checkpoint-every``). The run's final
    validation AP50 from MLflow."""
    from workflows.tracking import client

    train, val = make_shards(root, demo, ray_dir, views)
    uri = f"sqlite:///{root / 'mlruns.db'}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": uri}
    argv = [CENTERNET, "train", "--data", str(train), "--val-data", str(val), "--pretrained", "none",
            "--epochs", str(demo.epochs), "--batch-size", str(demo.batch_size),
            "--eval-every", str(demo.epochs), "--preview-images", "0",
            "--no-progress", "--storage-path", str(root / "ray_results"), "--name", "learns", *options]
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    run_id = next(line.split()[2].rstrip(";") for line in done.stdout.splitlines() if line.startswith("mlflow:"))
    run = client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    # the defaults were in force: from-scratch lr for batch B, default warmup, no clipping
    assert float(run.data.params["effective_lr"]) == pytest.approx(2e-3 * demo.batch_size / 32)
    return run.data.metrics["val/AP50"]


@pytest.mark.timeout(900)  # measured 3.5-5 min on the shared 2-core machine (load 25-50)
def test_defaults_learn_on_the_demo_test_budget(tmp_path, tmp_path_factory):
    # the demo test's SMALL data and budget (96 images of 1-2 large shapes, input 64, 25 epochs of
    # batch 16 = 150 steps), through Ray and the command's defaults (its warmup is not shortened).
    # Measured AP50 (seed 0): 0.117; 0.105 with the demo test's --warmup-steps 20; 0.108 with that and
    # 5 views x 5 epochs; the in-process demo on this data: 0.119. No CI-sized run reached 0.8: one
    # shape of 28-48 px per image, 50 epochs (300 steps): 0.083.
    ap50 = train_ap50(tmp_path, SMALL, tmp_path_factory.mktemp("ray"), "--checkpoint-every", str(SMALL.epochs))
    assert ap50 >= MIN_AP50, f"centernet train did not learn with its defaults: AP50 {ap50:.3f}"


@pytest.mark.long  # deselected by default (pyproject addopts); run: scripts/run_tests.sh <this file> -m long
@pytest.mark.timeout(5400)
def test_defaults_reach_the_demo_bar_at_full_budget(tmp_path, tmp_path_factory):
    # the demo's data and budget (600 images, input 128, batch 16, 36 epochs): the bar of issue #11.
    # 4 views per image, one read per epoch (the demo augments afresh every epoch; one fixed view
    # for 36 epochs reaches less). Checkpoints every epoch: a worker killed on a busy machine
    # resumes instead of starting over. Measured: AP50 0.838 in 747 s (benchmarks/train_defaults.py).
    ap50 = train_ap50(tmp_path, DemoConfig(), tmp_path_factory.mktemp("ray"), views=4)
    assert ap50 >= 0.8, f"centernet train's defaults missed the demo's bar: AP50 {ap50:.3f} < 0.8"
