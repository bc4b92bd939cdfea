"""Training throughput: Ray Train (1 worker) vs the plain PyTorch loop, and 2 workers vs 1.

Same model (ResNet-18 CenterNet), same precomputed shards (synthetic, the demo's input size 128),
same per-worker batch; each Ray worker and the plain loop get 1 CPU thread. Images/s is taken from
the last epoch (after warm-up), so Ray's start-up is not counted. Run:
    python benchmarks/train_throughput.py [--images 96] [--batch-size 8] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def plain_loop(shards: Path, batch_size: int, epochs: int) -> tuple[float, float]:
    import torch
    from torch.utils.data import DataLoader

    from centernet.batch import collate_samples
    from centernet.color import ColorAugment
    from centernet.engine import make_optimizer, train_epoch
    from centernet.losses import DEFAULT_LOSS_WEIGHTS, CenterNetLoss
    from centernet.models import build_model
    from centernet.schedule import scaled_lr
    from pipeline.reader import ShardDataset

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ds = ShardDataset(shards, rank=0, world_size=1, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=1, prefetch_factor=4, collate_fn=collate_samples)
    color = ColorAugment(0)  # as Ray Train's training loader (pipeline.loader.make_loader)
    model = build_model("resnet18", ds.num_classes)
    opt = make_optimizer(model, scaled_lr(batch_size))
    result = None
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        color.set_epoch(epoch)
        result = train_epoch(model, loader, criterion=CenterNetLoss(), optimizer=opt, weights=DEFAULT_LOSS_WEIGHTS,
                             device="cpu", color=color)
    return result.images_per_second, result.data_wait_share


def ray_train(shards: Path, batch_size: int, epochs: int, workers: int, storage: Path) -> tuple[float, float]:
    from workflows.train import run_training
from workflows.train_config import TrainConfig

    cfg = TrainConfig(pretrained="none", data=str(shards), epochs=epochs, batch_size=batch_size, num_workers=workers,
                      loader_workers=1, storage_path=str(storage), name=f"bench-{workers}-{time.time_ns()}")
    out = run_training(cfg, show_progress=False)
    return out.metrics["images_per_second"], out.metrics["data_wait_share"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from centernet.synthetic import make_synthetic_coco
    from pipeline.precompute import precompute
    from pipeline.schema import PrecomputeSettings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns.db'}")
        data = make_synthetic_coco(tmp / "coco", args.images, seed=0)
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
        try:
            precompute(data.images_dir, data.annotations, tmp / "shards",
                       PrecomputeSettings.of(input_size=args.input_size), chunk_size=16, progress=False)
            plain = plain_loop(tmp / "shards", args.batch_size, args.epochs)
            one = ray_train(tmp / "shards", args.batch_size, args.epochs, 1, tmp / "results")
            two = ray_train(tmp / "shards", args.batch_size, args.epochs, 2, tmp / "results")
        finally:
            ray.shutdown()
    print(f"ResNet-18, input {args.input_size}, batch {args.batch_size}/worker, {args.images} images, "
          f"last of {args.epochs} epochs, 1 CPU thread per worker, {os.cpu_count()} cores")
    print(f"plain PyTorch loop : {plain[0]:7.2f} img/s  data wait {plain[1]:6.1%}")
    print(f"Ray Train 1 worker : {one[0]:7.2f} img/s  data wait {one[1]:6.1%}")
    print(f"Ray Train 2 workers: {two[0]:7.2f} img/s  data wait {two[1]:6.1%}")
    print(f"ratio Ray 1 worker / plain loop: {one[0] / plain[0]:.3f}  (bar >= 0.9)")
    print(f"ratio Ray 2 workers / 1 worker : {two[0] / one[0]:.3f}")


if __name__ == "__main__":
    main()
