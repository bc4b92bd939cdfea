"""From-scratch training defaults through `centernet train` on Ray: the old defaults vs the new ones.

The demo's data (``workflows.demo.DemoConfig`` defaults: 600 train / 100 val synthetic images from
``centernet.synthetic.make_synthetic_coco``, seeds 0 / 1) is precomputed into shards at the demo's
input size (training shards augmented, ``--views`` copies per image, default 4, of which training
reads one per epoch, in turn; validation with ``--no-augment``), then
``centernet train`` runs twice as a subprocess, as a user types it (embedded local Ray on 127.0.0.1,
1 worker, the demo's batch 16 and 36 epochs, MLflow in a temporary sqlite store):

* old: ``--lr 6.25e-5 --lr-steps 90,120 --warmup-steps 0 --max-grad-norm 35`` — what the first
  ``TrainConfig`` resolved (lr = 1.25e-4 x global batch / 32, milestones 90,120, no warmup, clip 35);
* new: nothing but ``--pretrained none --epochs E`` (and the batch size): ``centernet.schedule``'s
  defaults.

Both also pass ``--eval-every E`` (evaluate once, at the end, as the demo does: wall time, not
training); checkpoints stay at every epoch, so a worker killed on a busy machine (Ray's memory
monitor) resumes from its last epoch instead of starting over. Prints AP50 / AP on the validation
shards and the wall time of each, and new / old ratios. Run (full size, ~20-60 min on 2 busy cores):
    python benchmarks/train_defaults.py [--epochs 36] [--train-images 600] [--views 4] [--only new]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

OLD_DEFAULTS = ("--lr", "6.25e-5", "--lr-steps", "90,120", "--warmup-steps", "0", "--max-grad-norm", "35")
RUNS = {"new": (), "old": OLD_DEFAULTS}  # new first: the bar that matters


@dataclass(frozen=True)
class TrainRun:
    ap50: float
    ap: float
    seconds: float


def centernet_command() -> str:
    """The ``centernet`` entry point next to this Python (the project's virtual environment)."""
    beside = Path(sys.executable).parent / "centernet"
    if not beside.exists():
        raise FileNotFoundError(f"{beside}: no centernet command beside this Python; run `make setup` first")
    return str(beside)


def make_shards(root: Path, train_images: int, val_images: int, views: int = 1) -> tuple[Path, Path]:
    """The demo's data (its generator, parameters and seeds) as train/val shards at its input size;
    ``views`` augmented copies of each training image (training reads one per epoch, in turn)."""
    from centernet.synthetic import make_synthetic_coco
    from workflows.demo import DemoConfig

    demo = DemoConfig(train_images=train_images, val_images=val_images)
    common = dict(image_size=demo.image_size, object_size=demo.object_size,
                  objects_per_image=demo.objects_per_image)
    train = make_synthetic_coco(root / "coco" / "train", demo.train_images, seed=demo.seed, **common)
    val = make_synthetic_coco(root / "coco" / "val", demo.val_images, seed=demo.seed + 1, **common)
    for name, data, extra in (("train", train, ("--views", str(views))), ("val", val, ("--no-augment",))):
        subprocess.run([centernet_command(), "precompute", "--images", str(data.images_dir), "--annotations",
                        str(data.annotations), "--out", str(root / name), "--input-size", str(demo.input_size),
                        "--seed", str(demo.seed), "--quiet", *extra], check=True)
    return root / "train", root / "val"


def train(shards: tuple[Path, Path], options: tuple[str, ...], *, epochs: int, batch_size: int,
          workdir: Path, name: str) -> TrainRun:
    """One ``centernet train`` subprocess from scratch; AP50 / AP of its MLflow run, wall seconds."""
    from workflows.tracking import client

    uri = f"sqlite:///{workdir / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    command = [centernet_command(), "train", "--data", str(shards[0]), "--val-data", str(shards[1]),
               "--pretrained", "none", "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--eval-every", str(epochs), "--no-progress",
               "--storage-path", str(workdir / "ray_results"), "--name", name, *options]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    out = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, text=True)  # stderr: as is
    seconds = time.perf_counter() - start
    print(out.stdout, end="", flush=True)
    run_id = next(line.split()[2].rstrip(";") for line in out.stdout.splitlines() if line.startswith("mlflow:"))
    metrics = client(uri).get_run(run_id).data.metrics
    return TrainRun(metrics["val/AP50"], metrics["val/AP"], seconds)


def main() -> None:
    from workflows.demo import DemoConfig

    demo = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=demo.epochs)
    parser.add_argument("--train-images", type=int, default=demo.train_images)
    parser.add_argument("--val-images", type=int, default=demo.val_images)
    parser.add_argument("--batch-size", type=int, default=demo.batch_size)
    parser.add_argument("--only", choices=sorted(RUNS), help="Run one of the two configurations only.")
    parser.add_argument("--views", type=int, default=4,
                        help="Augmented copies per training image (one is read per epoch, in turn).")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    results: dict[str, TrainRun] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = make_shards(root, args.train_images, args.val_images, args.views)
        for label, options in RUNS.items():
            if args.only in (None, label):
                results[label] = train(shards, options, epochs=args.epochs, batch_size=args.batch_size,
                                       workdir=root, name=f"defaults-{label}")
    print(f"ResNet-18 from scratch, demo data ({args.train_images} train / {args.val_images} val images, input "
          f"{demo.input_size}, {args.views} views), 1 Ray worker, batch {args.batch_size}, {args.epochs} epochs, {os.cpu_count()} cores")
    for label, r in results.items():
        print(f"{label:>3} defaults: AP50 {r.ap50:.3f}  AP {r.ap:.3f}  wall {r.seconds:7.1f} s  "
              f"{' '.join(RUNS[label]) or '(none given)'}")
    if len(results) == 2:
        old, new = results["old"], results["new"]
        ratio = (lambda a, b: f"{a / b:.2f}" if b > 0 else "inf")
        print(f"new / old: AP50 x{ratio(new.ap50, old.ap50)}  AP x{ratio(new.ap, old.ap)}  "
              f"wall x{ratio(new.seconds, old.seconds)}")


if __name__ == "__main__":
    main()
