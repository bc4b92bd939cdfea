"""The quick-start job: synthetic shapes dataset -> ResNet-18 CenterNet -> COCO AP -> picture.

Runs in one process with plain PyTorch (``centernet.engine``), so it works on a laptop in minutes,
and records the run in MLflow (``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db`` here).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from centernet.batch import collate_samples
from centernet.checkpoint import save_checkpoint
from centernet.color import ColorAugment
from centernet.dataset import CocoSampleDataset
from centernet.decode import boxes_to_original
from centernet.engine import make_optimizer, train_epoch
from centernet.evaluate import CocoMetrics
from centernet.inference import evaluate_model, predict
from centernet.losses import CenterNetLoss, validate_loss_weights
from centernet.models import build_model
from centernet.sample import SampleConfig
from centernet.schedule import (
    DEFAULT_MAX_GRAD_NORM,
    DEFAULT_WARMUP_STEPS,
    default_lr,
    default_lr_steps,
    make_lr_scheduler,
)
from centernet.synthetic import make_synthetic_coco
from centernet.transforms import check_input_size
from centernet.visualize import draw_detections, tile_images
from workflows.tracking import RunLogger, finish_run, git_commit, resolve_tracking_uri, start_run


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo run (defaults reach AP50 >= 0.8 in about 10 minutes on 2 CPU cores).

    The model trains from scratch (works offline) with the shared training defaults of
    :mod:`centernet.schedule`; ``lr``/``lr_steps`` ``None`` take ``default_lr(batch_size,
    pretrained=False)`` and ``default_lr_steps(epochs)``.
    """

    arch: str = "resnet18"
    train_images: int = 600
    val_images: int = 100
    input_size: int = 128
    image_size: tuple[int, int] = (112, 176)
    object_size: tuple[int, int] = (12, 56)
    objects_per_image: tuple[int, int] = (1, 6)
    epochs: int = 36
    batch_size: int = 16
    lr: float | None = None
    lr_steps: tuple[int, ...] | None = None
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    max_grad_norm: float | None = DEFAULT_MAX_GRAD_NORM
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        check_input_size(self.input_size)
        for name in ("train_images", "val_images", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr >= 0:
            raise ValueError(f"lr must be >= 0 or None (the default), got {self.lr!r}")

    @property
    def effective_lr(self) -> float:
        """``lr``, or the shared from-scratch default for ``batch_size``."""
        return default_lr(self.batch_size, pretrained=False) if self.lr is None else float(self.lr)

    @property
    def effective_lr_steps(self) -> tuple[int, ...]:
        """``lr_steps``, or the official milestones as fractions of ``epochs``."""
        return default_lr_steps(self.epochs) if self.lr_steps is None else tuple(self.lr_steps)


@dataclass(frozen=True)
class DemoResult:
    metrics: CocoMetrics
    picture: Path
    checkpoint: Path
    seconds: float
    tracking_uri: str
    run_id: str


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig()) -> DemoResult:
    """Generate data, train, evaluate and draw; everything lands in ``out_dir``."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)

    common = dict(image_size=config.image_size, object_size=config.object_size,
                  objects_per_image=config.objects_per_image)
    train_data = make_synthetic_coco(out / "data" / "train", config.train_images, seed=config.seed, **common)
    val_data = make_synthetic_coco(out / "data" / "val", config.val_images, seed=config.seed + 1, **common)
    print(f"data: {train_data.num_images} train images ({train_data.num_annotations} objects), "
          f"{val_data.num_images} val images ({val_data.num_annotations} objects) in {out / 'data'}")

    sample_cfg = SampleConfig(input_size=(config.input_size, config.input_size))
    train_set = CocoSampleDataset(train_data.images_dir, train_data.annotations, sample_cfg,
                                  augment=True, seed=config.seed)
    val_set = CocoSampleDataset(val_data.images_dir, val_data.annotations, sample_cfg)
    categories = train_set.coco.categories
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(config.seed), collate_fn=collate_samples)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, collate_fn=collate_samples)
    color = ColorAugment(config.seed)  # official colour augmentation, training batches only

    model = build_model(config.arch, categories.num_classes, pretrained="none")
    optimizer = make_optimizer(model, config.effective_lr)
    steps_per_epoch = len(train_loader)
    scheduler = make_lr_scheduler(optimizer, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                                  lr_steps=config.effective_lr_steps, warmup_steps=config.warmup_steps)
    criterion = CenterNetLoss()
    weights = validate_loss_weights({})

    tracking_uri = resolve_tracking_uri()
    params = {**asdict(config), "lr": config.effective_lr, "lr_steps": config.effective_lr_steps,
              "pretrained": "none", "loss_weights": weights}
    run_id = start_run(tracking_uri, experiment="centernet-demo", run_name=f"demo-{config.arch}",
                       params=params,
                       tags={"arch": config.arch, "git_commit": git_commit() or "unknown", "job": "demo"})
    tracker = RunLogger(tracking_uri, run_id)
    with tqdm(total=config.epochs * steps_per_epoch, desc="train", unit="step") as bar:
        for epoch in range(config.epochs):
            train_set.set_epoch(epoch)
            color.set_epoch(epoch)

            def on_step(_: int, step) -> None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{step.total:.3f}", hm=f"{step.losses['hm']:.3f}")

            result = train_epoch(model, train_loader, criterion=criterion, optimizer=optimizer,
                                 weights=weights, device="cpu", max_grad_norm=config.max_grad_norm,
                                 scheduler=scheduler, on_step=on_step, color=color)
            losses = result.mean_losses
            tracker.log_metrics({**{f"loss/{k}": v for k, v in losses.items()},
                                 "lr": optimizer.param_groups[0]["lr"], "images_per_s": result.images_per_second,
                                 "data_wait_share": result.data_wait_share}, step=epoch + 1)
            bar.write(f"epoch {epoch + 1}/{config.epochs}: loss {losses['total']:.3f} (hm {losses['hm']:.3f} "
                      f"wh {losses['wh']:.3f} reg {losses['reg']:.3f}), {result.images_per_second:.1f} img/s, "
                      f"data wait {result.data_wait_share:.0%}, skipped {result.skipped_steps}")

    metrics, _ = evaluate_model(model, val_loader, str(val_data.annotations), categories)
    checkpoint = save_checkpoint(out / "model.pt", model, optimizer=optimizer, scheduler=scheduler,
                                 epoch=config.epochs,
                                 extra={"arch": config.arch, "classes": categories.to_dict(),
                                        "input_size": [config.input_size, config.input_size]})
    picture = draw_validation_picture(model, val_set, out / "predictions.png")
    seconds = time.perf_counter() - start
    (out / "metrics.json").write_text(json.dumps(
        {"config": params, "metrics": metrics.as_dict(), "seconds": round(seconds, 1)}, indent=2))
    tracker.flush()
    finish_run(tracking_uri, run_id, metrics={f"val/{k}": v for k, v in metrics.as_dict().items()},
               artifacts=[(picture, "previews"), (checkpoint, "checkpoints"), (out / "metrics.json", "")])
    return DemoResult(metrics, picture, checkpoint, seconds, tracking_uri, run_id)


def draw_validation_picture(model: torch.nn.Module, val_set: CocoSampleDataset, path: Path,
                            count: int = 8) -> Path:
    """Predicted boxes (coloured, with scores) and truth (white) on the first ``count`` val images."""
    names = val_set.coco.categories.names
    tiles = []
    for i in range(min(count, len(val_set))):
        sample = val_set[i]
        dets = predict(model, sample["image"][None])[0].numpy()
        image = val_set.load_image(i)
        mapped = boxes_to_original(dets, sample["affine"].numpy().astype(np.float64), image.shape[:2])
        tiles.append(draw_detections(image, mapped, names, gt_boxes=val_set.coco.images[i].boxes))
    cv2.imwrite(str(path), tile_images(tiles))
    return path
