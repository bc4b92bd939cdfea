"""Distributed training on Ray Train: config, the per-worker loop, and the trainer around it.

``run_training(TrainConfig(...))`` starts (or connects to) Ray, opens one MLflow run for the job,
and runs :func:`train_loop_per_worker` on N DDP workers (gloo on CPU, NCCL on GPU) through
``ray.train.torch.TorchTrainer``. Each worker streams its share of the precomputed shards
(``pipeline.reader.ShardDataset``; a plain COCO directory works too, made into samples in process),
calls ``centernet.engine.train_epoch`` unchanged, and reports metrics and (rank 0) a checkpoint with
``ray.train.report`` at the end of every epoch. Rank 0 alone writes to MLflow.

Checkpoints are ``checkpoint.pt`` files written by ``centernet.checkpoint.save_checkpoint``
(tensors and plain data only, read back with ``weights_only=True``) holding model, optimizer,
scheduler, epoch, the config, the class map and the data's manifest hash. A worker failure restarts
the worker group from the latest checkpoint (``FailureConfig.max_failures``); running again with the
same storage path and name (``resume_config``) continues a finished or stopped run, e.g. with more
epochs, in the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.loader import DataInfo, describe_data, in_lockstep, make_loader

CHECKPOINT_FILE = "checkpoint.pt"
RUN_META_FILE = "centernet_run.json"
AMP_MODES = ("none", "bf16", "fp16")
BATCHNORM_MODES = ("batch", "frozen", "sync")


# --------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training job needs; validated on construction.

    ``batch_size`` is per worker; the learning rate defaults to the official 1.25e-4 at batch 32
    scaled linearly to the global batch (``batch_size * num_workers``). ``lr_steps``: epochs after
    which the lr is multiplied by 0.1. ``checkpoint_every``/``eval_every``: in epochs (the last
    epoch always does both). ``keep_checkpoints``: how many to keep (the best by val AP when there
    is validation data, else the latest; Ray always keeps the latest too). ``batchnorm``:
    ``"batch"`` (per-replica statistics, as the official multi-GPU training), ``"frozen"`` (running
    statistics, affine still trained) or ``"sync"`` (SyncBatchNorm, GPU only).
    ``input_size`` is used only for COCO-directory data; shards carry their own.
    """

    data: str
    arch: str = "resnet18"
    val_data: str | None = None
    epochs: int = 140
    batch_size: int = 32
    lr: float | None = None
    lr_steps: tuple[int, ...] = (90, 120)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"hm": 1.0, "wh": 0.1, "reg": 1.0})
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    amp: str = "none"
    seed: int = 0
    checkpoint_every: int = 1
    eval_every: int = 1
    keep_checkpoints: int = 2
    max_failures: int = 3
    storage_path: str = "ray_results"
    name: str | None = None
    experiment: str = "centernet"
    head_conv: int | None = None
    pretrained: str | None = None
    input_size: int = 512
    loader_workers: int = 1
    max_steps_per_epoch: int | None = None
    max_grad_norm: float | None = 35.0
    batchnorm: str = "batch"
    preview_images: int = 4
    log_every: int = 1

    def __post_init__(self) -> None:
        from centernet.losses import validate_loss_weights
        from centernet.models import available_architectures

        def positive(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

        if not self.data:
            raise ValueError("data must be a shard directory (or COCO directory), got an empty value")
        if self.arch not in available_architectures():
            raise ValueError(f"unknown arch {self.arch!r}; valid: {', '.join(available_architectures())}")
        for name in ("epochs", "batch_size", "num_workers", "cpus_per_worker", "checkpoint_every",
                     "eval_every", "keep_checkpoints", "log_every"):
            positive(name)
        positive("max_steps_per_epoch", allow_none=True)
        positive("head_conv", allow_none=True)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"lr must be in (0, 1) or None (scaled from the batch), got {self.lr!r}")
        steps = tuple(int(s) for s in self.lr_steps)
        if any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"lr_steps must be increasing epochs >= 1, got {self.lr_steps!r}")
        object.__setattr__(self, "lr_steps", steps)
        object.__setattr__(self, "loss_weights", {k: float(v) for k, v in dict(self.loss_weights).items()})
        validate_loss_weights(self.loss_weights)
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.amp != "none" and not self.use_gpu:
            raise ValueError(f"amp={self.amp!r} needs use_gpu=True (mixed precision runs on GPU only)")
        if self.batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {self.batchnorm!r}")
        if self.batchnorm == "sync" and not self.use_gpu:
            raise ValueError("batchnorm='sync' needs use_gpu=True (SyncBatchNorm has no CPU kernel)")
        if self.max_failures < -1:
            raise ValueError(f"max_failures must be >= -1 (-1: retry forever), got {self.max_failures!r}")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size must be a positive multiple of 32, got {self.input_size!r}")
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers!r}")
        if self.preview_images < 0:
            raise ValueError(f"preview_images must be >= 0, got {self.preview_images!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_workers

    @property
    def effective_lr(self) -> float:
        from centernet.schedule import scaled_lr

        return float(self.lr) if self.lr is not None else scaled_lr(self.global_batch_size)

    @property
    def storage_uri(self) -> str:
        """The storage path made absolute (Ray Train needs absolute paths or URIs)."""
        if "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain mapping (YAML file, CLI); unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; valid keys: {sorted(known)}")
        values = dict(data)
        if "lr_steps" in values and values["lr_steps"] is not None:
            values["lr_steps"] = tuple(values["lr_steps"])
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) config file as a plain dict (``yaml.safe_load``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------- model
def apply_batchnorm_mode(model: Any, mode: str) -> Any:
    """``"frozen"``: batch norm uses running statistics even in train mode (affine still trains),
    making every sample's gradient independent of the others in its batch; ``"sync"``:
    SyncBatchNorm; ``"batch"``: unchanged."""
    import torch
    import torch.nn.functional as F

    if mode == "sync":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if mode == "frozen":
        class FrozenStatsBatchNorm2d(torch.nn.BatchNorm2d):
            def forward(self, x):  # noqa: D401 - same parameters and buffers as BatchNorm2d
                return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                    False, 0.0, self.eps)

        for m in model.modules():
            if type(m) is torch.nn.BatchNorm2d:
                m.__class__ = FrozenStatsBatchNorm2d
    return model


# ------------------------------------------------------------------------------------ progress
class _ProgressBoard:
    """A tiny actor the workers write their progress to and the driver reads (named per job)."""

    def __init__(self) -> None:
        self.progress: dict[str, Any] = {}
        self.workers: dict[int, dict[str, Any]] = {}
        self.attempts = 0

    def update(self, state: dict[str, Any]) -> None:
        self.progress.update(state)

    def register(self, rank: int, info: dict[str, Any]) -> None:
        if rank == 0:
            self.attempts += 1
        self.workers[rank] = info

    def get(self) -> dict[str, Any]:
        return {"progress": dict(self.progress), "workers": dict(self.workers), "attempts": self.attempts}


def progress_actor_name(run: str) -> str:
    """The name of the progress actor of run ``run`` (tests and tools can look it up)."""
    return f"centernet-progress-{run}"


def progress_board(name: str):
    """Create the named progress actor of a job (0 CPUs, owned by the driver)."""
    import ray

    return ray.remote(num_cpus=0)(_ProgressBoard).options(name=name, get_if_exists=True).remote()


# -------------------------------------------------------------------------------- worker loop
_GT_CACHE: dict[str, Any] = {}


def _ground_truth(path: str):
    from centernet.evaluate import load_ground_truth

    if path not in _GT_CACHE:
        _GT_CACHE[path] = load_ground_truth(path)
    return _GT_CACHE[path]


def _gather(obj: Any, world_size: int) -> list[Any]:
    import torch.distributed as dist

    if world_size == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def evaluate_distributed(
    module: Any, info: DataInfo, *, rank: int, world_size: int, batch_size: int, device: Any,
    preview_images: int = 0,
) -> tuple[dict[str, float] | None, Any]:
    """COCO AP over the validation data: each rank predicts its share with
    :func:`centernet.inference.predict_loader`, the results are gathered on rank 0, which scores
    every image exactly once. Returns (metrics on rank 0 else None, (images, detections,
    heatmaps) of a few rank-0 images for the preview)."""
    import torch

    from centernet.data import CategoryMap
    from centernet.evaluate import evaluate_coco
    from centernet.inference import image_sizes_of, predict_loader
    from centernet.transforms import normalize_batch

    if info.annotations is None:
        raise ValueError(f"{info.path}: no ground-truth annotation file to evaluate against")
    gt = _ground_truth(info.annotations)
    cats = CategoryMap.from_dict(info.classes)
    loader = make_loader(info, rank=rank, world_size=world_size, batch_size=batch_size, train=False)
    preview: list[Any] = []

    def keep_preview(images: Any, dets: Any) -> None:
        if not preview and preview_images > 0 and rank == 0:
            n = preview_images
            images = normalize_batch(images[:n])
            with torch.no_grad():
                heat = torch.sigmoid(module(images)[-1]["hm"].float())
            preview.extend([images.cpu(), dets[:n].cpu(), heat.cpu()])

    results, seen = predict_loader(module, loader, cats, image_sizes_of(gt), device=device,
                                   on_batch=keep_preview)
    gathered = _gather((results, seen), world_size)
    if rank != 0:
        return None, None
    all_results = [r for rs, _ in gathered for r in rs]
    all_seen = [i for _, ids in gathered for i in ids]
    if len(all_seen) != len(set(all_seen)):
        dup = sorted({i for i in all_seen if all_seen.count(i) > 1})[:10]
        raise RuntimeError(f"validation images given to more than one rank (ids {dup}); reader sharding bug")
    metrics = evaluate_coco(gt, all_results, image_ids=all_seen).as_dict()
    return metrics, (tuple(preview) if preview else None)


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """The function every Ray Train worker runs (see the module docstring).

    ``loop_config``: ``{"config": TrainConfig.to_dict(), "tracking_uri", "mlflow_run_id",
    "progress_actor"}``. Returns, on rank 0, a summary: epochs run, the epoch this attempt started
    from, and each rank's node, pid and the image ids it trained on in its first epoch.
    """
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from centernet.checkpoint import load_checkpoint_file, restore_training_state, save_checkpoint
    from centernet.data import CategoryMap
    from centernet.engine import make_optimizer, make_scheduler, train_epoch
    from centernet.losses import LOSS_NAMES, CenterNetLoss
    from centernet.models import build_model

    cfg = TrainConfig.from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    board = None
    if loop_config.get("progress_actor"):
        try:
            board = ray.get_actor(loop_config["progress_actor"])
        except ValueError:
            board = None
    node_id = ray.get_runtime_context().get_node_id()
    if board is not None:
        board.register.remote(rank, {"pid": os.getpid(), "node_id": node_id, "time": time.time()})

    info = describe_data(cfg.data, cfg.input_size)
    val_info = describe_data(cfg.val_data, cfg.input_size) if cfg.val_data else None
    categories = CategoryMap.from_dict(info.classes)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, categories.num_classes, head_conv=cfg.head_conv, pretrained=cfg.pretrained)
    model = apply_batchnorm_mode(model, cfg.batchnorm).to(device)
    optimizer = make_optimizer(model, cfg.effective_lr)
    scheduler = make_scheduler(optimizer, cfg.lr_steps)
    start_epoch, global_step, best_ap = 0, 0, float("nan")
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = load_checkpoint_file(Path(ckpt_dir) / CHECKPOINT_FILE)
        extra = state.get("extra", {})
        if extra.get("arch") not in (None, cfg.arch):
            raise ValueError(f"checkpoint is for arch {extra.get('arch')!r}, config says {cfg.arch!r}")
        start_epoch = restore_training_state(state, model, optimizer, scheduler) + 1
        global_step = int(extra.get("global_step", 0))
        best_ap = float(extra.get("best_ap", float("nan")))
        if rank == 0 and extra.get("data_hash") not in (None, info.data_hash):
            print(f"[centernet] warning: resuming on different data (manifest hash {info.data_hash}, "
                  f"checkpoint {extra.get('data_hash')})")
    model = ray.train.torch.prepare_model(model, move_to_device=False)
    module = model.module if hasattr(model, "module") else model

    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    criterion = CenterNetLoss()
    loader = make_loader(info, rank=rank, world_size=world, batch_size=cfg.batch_size, train=True,
                         seed=cfg.seed, loader_workers=cfg.loader_workers, pin_memory=device.type == "cuda")

    logger = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        from workflows.tracking import RunLogger

        logger = RunLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"])

    first_epoch_ids: list[int] | None = None
    epoch_metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        seen: list[int] | None = [] if first_epoch_ids is None else None
        lr = optimizer.param_groups[0]["lr"]
        last = {"t": time.perf_counter()}

        def on_step(i: int, step: Any, epoch: int = epoch, lr: float = lr) -> None:
            nonlocal global_step
            global_step += 1
            now = time.perf_counter()
            ips = step.batch_size * world / max(now - last["t"], 1e-9)
            last["t"] = now
            if rank != 0:
                return
            if logger is not None and (global_step % cfg.log_every == 0):
                m = {f"loss/{k}": v for k, v in step.losses.items()}
                m.update({f"loss_weighted/{k}": v * cfg.loss_weights.get(k, 0.0) for k, v in step.losses.items()})
                m.update({"loss/total": step.total, "lr": lr, "grad_norm": step.grad_norm,
                          "images_per_second_step": ips, "epoch": epoch, "skipped": float(step.skipped)})
                logger.log_metrics(m, step=global_step)
            if board is not None:
                board.update.remote({"epoch": epoch, "epochs": cfg.epochs, "step": i + 1,
                                     "global_step": global_step, "loss": step.total,
                                     "images_per_second": ips})

        result = train_epoch(model, in_lockstep(loader, world, seen), criterion=criterion,
                             optimizer=optimizer, weights=cfg.loss_weights, device=device,
                             max_grad_norm=cfg.max_grad_norm, amp_dtype=amp_dtype, scaler=scaler,
                             on_step=on_step, max_steps=cfg.max_steps_per_epoch)
        scheduler.step()
        if seen is not None:
            first_epoch_ids = seen

        # Aggregate over ranks: mean losses, summed throughput, mean data-wait share.
        local = [result.mean_losses.get(k, 0.0) for k in (*LOSS_NAMES, "total")]
        local += [result.images_per_second, result.data_wait_share, float(result.steps),
                  float(result.skipped_steps), float(result.images)]
        stats = torch.tensor(local, dtype=torch.float64)
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(stats)
        n = len(LOSS_NAMES) + 1
        means = (stats[:n] / world).tolist()
        epoch_metrics = {f"train/{k}": v for k, v in zip((*LOSS_NAMES, "total"), means)}
        epoch_metrics.update({
            "epoch": epoch, "global_step": global_step, "start_epoch": start_epoch,
            "lr": lr, "images_per_second": float(stats[n]), "data_wait_share": float(stats[n + 1]) / world,
            "steps": int(stats[n + 2] / world), "skipped_steps": int(stats[n + 3]),
            "images": int(stats[n + 4]),
        })
        is_last = epoch == cfg.epochs - 1
        if val_info is not None and ((epoch + 1) % cfg.eval_every == 0 or is_last):
            val, preview = evaluate_distributed(module, val_info, rank=rank, world_size=world,
                                                batch_size=cfg.batch_size, device=device,
                                                preview_images=cfg.preview_images)
            if rank == 0 and val is not None:
                epoch_metrics.update({f"val/{k}": v for k, v in val.items()})
                best_ap = val["AP"] if not best_ap >= val["AP"] else best_ap
                if logger is not None and preview is not None:
                    _log_preview(logger, preview, categories, epoch)
        if val_info is not None:
            epoch_metrics["val_AP"] = float(epoch_metrics.get("val/AP", best_ap if math.isfinite(best_ap) else -1.0))
            epoch_metrics["best_val_AP"] = best_ap if math.isfinite(best_ap) else -1.0
        if logger is not None:
            logger.log_metrics({k: v for k, v in epoch_metrics.items() if isinstance(v, (int, float))},
                               step=global_step, flush=True)

        report_metrics = {k: v for k, v in epoch_metrics.items() if isinstance(v, (int, float))}
        if (epoch + 1) % cfg.checkpoint_every == 0 or is_last:
            with tempfile.TemporaryDirectory(prefix="centernet-ckpt-") as tmp:
                ckpt = None
                if rank == 0:
                    extra = {"config": cfg.to_dict(), "classes": info.classes, "data_hash": info.data_hash,
                             "arch": cfg.arch, "num_classes": categories.num_classes,
                             "global_step": global_step, "best_ap": best_ap, "metrics": report_metrics}
                    save_checkpoint(Path(tmp) / CHECKPOINT_FILE, model, optimizer=optimizer,
                                    scheduler=scheduler, epoch=epoch, extra=extra)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(report_metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:04d}")
        else:
            ray.train.report(report_metrics)

    shares = _gather({"rank": rank, "node_id": node_id, "pid": os.getpid(),
                      "image_ids": sorted(first_epoch_ids or [])}, world)
    if logger is not None:
        logger.flush()
    if rank != 0:
        return None
    return {"epochs": cfg.epochs, "start_epoch": start_epoch, "global_step": global_step,
            "metrics": epoch_metrics, "shares": shares}


def _log_preview(logger: Any, preview: Any, categories: Any, epoch: int) -> None:
    import matplotlib.pyplot as plt

    from workflows.tracking import preview_figure

    fig = preview_figure(*preview, categories.names)
    try:
        logger.log_figure(fig, f"previews/epoch_{epoch:04d}.png")
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------- driver
@dataclass
class TrainOutcome:
    """What a finished job left: the Ray result, its run directory and the MLflow run."""

    result: Any
    run_dir: str
    mlflow_run_id: str
    tracking_uri: str
    checkpoint_path: str | None
    metrics: dict[str, Any]
    summary: dict[str, Any] | None


def run_name(cfg: TrainConfig) -> str:
    return cfg.name or f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"


def _read_meta(run_dir: str) -> dict[str, Any] | None:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(run_dir if "://" in run_dir else str(Path(run_dir).resolve()))
    target = f"{path}/{RUN_META_FILE}"
    if fs.get_file_info(target).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(target) as f:
        return json.loads(f.read().decode())


def _write_meta(run_dir: str, meta: dict[str, Any]) -> None:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(run_dir if "://" in run_dir else str(Path(run_dir).resolve()))
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{RUN_META_FILE}.tmp") as f:
        f.write(json.dumps(meta, indent=2).encode())
    fs.move(f"{path}/{RUN_META_FILE}.tmp", f"{path}/{RUN_META_FILE}")


def resume_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The config of the run stored at ``run_dir`` (``<storage_path>/<name>``) with ``overrides``
    (e.g. ``epochs=20``): training it continues from that run's latest checkpoint."""
    run_dir = str(run_dir).rstrip("/")
    meta = _read_meta(run_dir)
    if meta is None:
        raise FileNotFoundError(f"{run_dir}: no {RUN_META_FILE}; not a run directory written by centernet train")
    base = dict(meta["config"])
    parent, _, name = run_dir.rpartition("/")
    base.update(storage_path=parent or ".", name=name)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(base)


def build_trainer(cfg: TrainConfig, *, tracking_uri: str, mlflow_run_id: str | None,
                  progress_actor: str | None = None, env_vars: Mapping[str, str] | None = None):
    """The ``TorchTrainer`` of a job (gloo on CPU, NCCL on GPU)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    score = "val_AP" if cfg.val_data else None
    run_config = RunConfig(
        name=run_name(cfg),
        storage_path=cfg.storage_uri,
        failure_config=FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints, checkpoint_score_attribute=score,
                                           checkpoint_score_order="max"),
        worker_runtime_env={"env_vars": dict(env_vars)} if env_vars else None,
    )
    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "tracking_uri": tracking_uri,
                           "mlflow_run_id": mlflow_run_id, "progress_actor": progress_actor},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=run_config,
    )


def _show_progress(board: Any, cfg: TrainConfig, stop: threading.Event, interval: float = 0.5) -> None:
    import sys

    import ray
    from tqdm import tqdm

    bar = tqdm(total=cfg.epochs, desc="epochs", unit="epoch", dynamic_ncols=True,
               disable=None if sys.stderr.isatty() else True)
    last_line = 0.0
    try:
        while not stop.wait(interval):
            try:
                state = ray.get(board.get.remote(), timeout=5)
            except Exception:
                continue
            p = state["progress"]
            if not p:
                continue
            done = int(p.get("epoch", 0))
            bar.n = done
            bar.set_postfix_str(f"epoch {done + 1}/{cfg.epochs} step {p.get('step', 0)} "
                                f"loss {p.get('loss', float('nan')):.4f} {p.get('images_per_second', 0):.1f} img/s"
                                f" attempt {state['attempts']}")
            if bar.disable and time.monotonic() - last_line > 10:  # not a terminal: a line every 10 s
                last_line = time.monotonic()
                print(f"[centernet] epoch {done + 1}/{cfg.epochs} step {p.get('step', 0)} "
                      f"loss {p.get('loss', float('nan')):.4f} {p.get('images_per_second', 0):.1f} img/s",
                      flush=True)
    finally:
        bar.close()


def run_training(cfg: TrainConfig, *, address: str | None = None, show_progress: bool = True) -> TrainOutcome:
    """Run a training job end to end (see the module docstring); resumes when ``<storage>/<name>``
    already holds a run. Raises ``ray.train.TrainingFailedError`` when it fails for good."""
    import ray

    from workflows.ray_runtime import ray_session, worker_env_vars
    from workflows.tracking import finish_run, git_commit, resolve_tracking_uri, start_run

    name = run_name(cfg)
    cfg = cfg.replace(name=name)
    info = describe_data(cfg.data, cfg.input_size)
    if cfg.val_data:
        val_info = describe_data(cfg.val_data, cfg.input_size)
        if val_info.classes != info.classes:
            raise ValueError(f"val_data classes {val_info.classes} differ from data classes {info.classes}")
    run_dir = f"{cfg.storage_uri.rstrip('/')}/{name}"
    tracking_uri = resolve_tracking_uri()
    env_vars = worker_env_vars(tracking_uri)
    meta = _read_meta(run_dir)
    tags = {"arch": cfg.arch, "git_commit": git_commit() or "unknown", "data_hash": info.data_hash,
            "data_kind": info.kind, "ray_run_dir": run_dir, "num_workers": str(cfg.num_workers)}
    params = {**cfg.to_dict(), "effective_lr": cfg.effective_lr, "global_batch_size": cfg.global_batch_size,
              "num_classes": len(info.classes["category_ids"]), "num_samples": info.num_samples}
    run_id = start_run(tracking_uri, experiment=cfg.experiment, run_name=name, params=params, tags=tags,
                       run_id=meta["mlflow_run_id"] if meta else None)
    _write_meta(run_dir, {"mlflow_run_id": run_id, "tracking_uri": tracking_uri, "config": cfg.to_dict()})

    with ray_session(address, env_vars=env_vars):
        board_name = progress_actor_name(name)
        board = progress_board(board_name)
        trainer = build_trainer(cfg, tracking_uri=tracking_uri, mlflow_run_id=run_id,
                                progress_actor=board_name, env_vars=env_vars)
        stop = threading.Event()
        thread = None
        if show_progress:
            thread = threading.Thread(target=_show_progress, args=(board, cfg, stop), daemon=True)
            thread.start()
        try:
            result = trainer.fit()
        except BaseException:
            finish_run(tracking_uri, run_id, status="FAILED")
            raise
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=5)
            ray.kill(board)

        checkpoint_path = None
        artifacts: list[tuple[str, str]] = []
        for d in (info, val_info if cfg.val_data else None):
            if d is not None and d.manifest:
                artifacts.append((d.manifest, "data" if d is info else "val_data"))
        if result.checkpoint is not None:
            checkpoint_path = f"{result.checkpoint.path}/{CHECKPOINT_FILE}"
            with result.checkpoint.as_directory() as local_dir:  # downloads from remote storage
                finish_run(tracking_uri, run_id,
                           artifacts=[*artifacts, (str(Path(local_dir) / CHECKPOINT_FILE), "checkpoint")])
        else:
            finish_run(tracking_uri, run_id, artifacts=artifacts)
    return TrainOutcome(result, run_dir, run_id, tracking_uri, checkpoint_path, dict(result.metrics or {}),
                        result.return_value)
