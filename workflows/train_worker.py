"""What every Ray Train worker runs: build the model, stream its share of the data, train epochs
with ``centernet.engine.train_epoch``, evaluate, checkpoint and report.

Rank 0 alone writes to MLflow (:class:`workflows.tracking.RunLogger`) and to the progress board.
Checkpoints (``checkpoint.pt``, ``centernet.checkpoint.save_checkpoint``: tensors and plain data,
read back with ``weights_only=True``) hold model, optimizer, scheduler, epoch and an ``extra`` dict:
``config``, ``arch``, ``classes``, ``num_classes``, ``input_size`` [H, W], ``data_hash``,
``val_data_hash``, ``global_step``, ``best_ap`` and the epoch's ``metrics``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.loader import DataInfo, describe_data, in_lockstep, make_loader, steps_per_epoch
from workflows.checkpoint_staging import staging_dir
from workflows.distributed_eval import evaluate_distributed, gather
from workflows.progress import find_board
from workflows.train_config import TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"
# How long rank 0 waits at the end of training for an MLflow server that went away to take its metrics.
FINAL_FLUSH_TIMEOUT_S = 120


@dataclass
class Worker:
    """This worker's place in the job and its channels to the driver."""

    cfg: TrainConfig
    rank: int
    world: int
    device: Any
    node_id: str
    board: Any | None
    logger: Any | None
    log_epoch_metrics: bool = True  # False: the driver logs the reported epoch metrics (a Tune trial)


@dataclass
class State:
    """The model and optimisation state one worker trains."""

    model: Any  # DDP-wrapped when world > 1
    module: Any  # the bare model
    optimizer: Any
    scheduler: Any
    scaler: Any | None
    amp_dtype: Any | None
    memory_format: Any  # of the images on the device: torch.channels_last for a channels-last model
    criterion: Any  # CenterNetLoss, compiled with the model under --compile
    start_epoch: int = 0
    global_step: int = 0
    best_ap: float = float("nan")
    metrics: dict[str, Any] = field(default_factory=dict)


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """The Ray Train worker function.

    ``loop_config``: ``{"config": TrainConfig.to_dict(), "tracking_uri", "mlflow_run_id",
    "progress_actor", "log_epoch_metrics"}`` (the last optional: ``False`` leaves the epoch metrics
    to whoever receives the reports, e.g. a Tune search's driver). Returns, on rank 0, a summary: epochs run, the epoch this attempt started
    from, the last metrics, and each rank's node, pid and the image ids of its first epoch.
    """
    w = _worker(loop_config)
    info = describe_data(w.cfg.data, w.cfg.input_size)
    val_info = describe_data(w.cfg.val_data, w.cfg.input_size) if w.cfg.val_data else None
    state = _build_state(w, info)
    loader = make_loader(info, rank=w.rank, world_size=w.world, batch_size=w.cfg.batch_size, train=True,
                         seed=w.cfg.seed, loader_workers=w.cfg.loader_workers,
                         pin_memory=w.device.type == "cuda", color_aug=w.cfg.color_aug)
    first_ids: list[int] | None = None
    for epoch in range(state.start_epoch, w.cfg.epochs):
        loader.set_epoch(epoch)
        seen: list[int] | None = [] if first_ids is None else None
        result = _train_one_epoch(w, state, in_lockstep(loader, w.world, seen), epoch, loader.color)
        first_ids = seen if seen is not None else first_ids
        state.metrics = _epoch_metrics(w, state, result, epoch)
        if val_info is not None:
            state.metrics.update(_validate(w, state, val_info, info, epoch))
        if w.logger is not None and w.log_epoch_metrics:
            w.logger.log_metrics(state.metrics, step=state.global_step, flush=True)
        elif w.logger is not None:
            w.logger.flush()
        _report(w, state, info, val_info, epoch)
    shares = gather({"rank": w.rank, "node_id": w.node_id, "pid": os.getpid(),
                     "image_ids": sorted(first_ids or [])}, w.world)
    unsent = _close_logger(w.logger)
    if w.rank != 0:
        return None
    return {"epochs": w.cfg.epochs, "start_epoch": state.start_epoch, "global_step": state.global_step,
            "metrics": state.metrics, "shares": shares, "unsent_metrics": unsent}


def _close_logger(logger: Any | None) -> list[Any]:
    """Wait (at most ``FINAL_FLUSH_TIMEOUT_S``) until rank 0's metrics are in MLflow; those the server
    did not take by then go back to the driver (``mlflow.entities.Metric``), which logs them when it
    closes the run."""
    if logger is None:
        return []
    unsent = logger.close(timeout_s=FINAL_FLUSH_TIMEOUT_S)
    if unsent:
        logging.getLogger("centernet.train").warning(
            "warning: MLflow at %s did not take %d metrics within %d s (%s); the driver logs them",
            logger.tracking_uri, len(unsent), FINAL_FLUSH_TIMEOUT_S, logger.last_error)
    return unsent


def _worker(loop_config: dict[str, Any]) -> Worker:
    import ray
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    board = find_board(loop_config.get("progress_actor"))
    node_id = ray.get_runtime_context().get_node_id()
    if board is not None:
        board.register.remote(rank, {"pid": os.getpid(), "node_id": node_id, "time": time.time()})
    logger = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        from workflows.tracking import RunLogger

        logger = RunLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"])
    return Worker(cfg, rank, world, ray.train.torch.get_device(), node_id, board, logger,
                  log_epoch_metrics=loop_config.get("log_epoch_metrics", True))


def _build_state(w: Worker, info: DataInfo) -> State:
    """Model (rank 0 loads pretrained weights; DDP broadcasts them), optimizer, schedule, and the
    latest checkpoint's state when Ray Train restarts or resumes the run."""
    import ray.train
    import ray.train.torch
    import torch

    from centernet.batchnorm import apply_batchnorm_mode
    from centernet.data import CategoryMap
    from centernet.engine import make_optimizer
    from centernet.losses import CenterNetLoss
    from centernet.models import build_model
    from centernet.schedule import make_lr_scheduler

    cfg = w.cfg
    torch.manual_seed(cfg.seed)
    num_classes = CategoryMap.from_dict(info.classes).num_classes
    pretrained = cfg.pretrained_source if w.rank == 0 else "none"
    model = build_model(cfg.arch, num_classes, head_conv=cfg.head_conv, pretrained=pretrained)
    model = apply_batchnorm_mode(model, cfg.batchnorm).to(w.device)
    channels_last = cfg.channels_last and w.device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, cfg.effective_lr)
    steps = steps_per_epoch(info.images_per_epoch, w.world, cfg.batch_size, cfg.max_steps_per_epoch)
    with warnings.catch_warnings():  # the driver already said it (a milestone past the last epoch)
        warnings.simplefilter("ignore", UserWarning)
        scheduler = make_lr_scheduler(optimizer, epochs=cfg.epochs, steps_per_epoch=max(1, steps),
                                      kind=cfg.lr_schedule, lr_steps=cfg.lr_steps,
                                      warmup_steps=cfg.effective_warmup_steps)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    state = State(model, model, optimizer, scheduler, scaler, amp_dtype, memory_format, CenterNetLoss())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        _restore(w, state, checkpoint, info)
    state.model = ray.train.torch.prepare_model(model, move_to_device=False)
    state.module = model  # the bare model: evaluation and checkpoints (no DDP or compiler wrapper)
    if cfg.compile:  # the loss too: its element-wise work over [B, C, H/4, W/4] is a third of an eager step
        state.model, state.criterion = torch.compile(state.model), torch.compile(state.criterion)
    return state


def _restore(w: Worker, state: State, checkpoint: Any, info: DataInfo) -> None:
    from centernet.checkpoint import load_checkpoint_file, restore_training_state

    with checkpoint.as_directory() as ckpt_dir:
        saved = load_checkpoint_file(Path(ckpt_dir) / CHECKPOINT_FILE)
    extra = saved.get("extra", {})
    if extra.get("arch") not in (None, w.cfg.arch):
        raise ValueError(f"checkpoint is for arch {extra.get('arch')!r}, config says {w.cfg.arch!r}")
    state.start_epoch = restore_training_state(saved, state.model, state.optimizer, state.scheduler) + 1
    state.global_step = int(extra.get("global_step", 0))
    state.best_ap = float(extra.get("best_ap", float("nan")))
    if w.rank == 0 and extra.get("data_hash") not in (None, info.data_hash):
        logging.getLogger("centernet.train").warning(
            "warning: resuming on different data (manifest hash %s, checkpoint %s)", info.data_hash,
            extra.get("data_hash"))


def _train_one_epoch(w: Worker, state: State, batches: Any, epoch: int, color: Any) -> Any:
    """``train_epoch`` over this rank's batches (``color``: the loader's colour augmentation or
    ``None``); rank 0 logs each step and updates the board."""
    from centernet.engine import train_epoch

    cfg = w.cfg
    last = [time.perf_counter()]

    def on_step(i: int, step: Any) -> None:
        state.global_step += 1
        now = time.perf_counter()
        ips = step.batch_size * w.world / max(now - last[0], 1e-9)
        last[0] = now
        if w.rank != 0:
            return
        if w.logger is not None and state.global_step % cfg.log_every == 0:
            m = {f"loss/{k}": v for k, v in step.losses.items()}
            m.update({f"loss_weighted/{k}": v * cfg.loss_weights.get(k, 0.0) for k, v in step.losses.items()})
            m.update({"loss/total": step.total, "lr": state.optimizer.param_groups[0]["lr"], "grad_norm": step.grad_norm,
                      "images_per_second_step": ips, "epoch": epoch, "skipped": float(step.skipped)})
            w.logger.log_metrics(m, step=state.global_step)
        if w.board is not None:
            w.board.update.remote({"epoch": epoch, "epochs": cfg.epochs, "step": i + 1,
                                   "global_step": state.global_step, "loss": step.total,
                                   "images_per_second": ips, "skipped": step.skipped})

    result = train_epoch(state.model, batches, criterion=state.criterion, optimizer=state.optimizer,
                         weights=cfg.loss_weights, device=w.device, max_grad_norm=cfg.max_grad_norm,
                         amp_dtype=state.amp_dtype, scaler=state.scaler, scheduler=state.scheduler,
                         on_step=on_step, max_steps=cfg.max_steps_per_epoch, color=color,
                         memory_format=state.memory_format)
    return result


def _epoch_metrics(w: Worker, state: State, result: Any, epoch: int) -> dict[str, Any]:
    """The epoch's metrics over all ranks: mean losses, summed throughput, mean data-wait share."""
    import torch

    from centernet.losses import LOSS_NAMES

    names = (*LOSS_NAMES, "total")
    local = [result.mean_losses.get(k, 0.0) for k in names]
    local += [result.images_per_second, result.data_wait_share, float(result.steps),
              float(result.skipped_steps), float(result.images)]
    stats = torch.tensor(local, dtype=torch.float64)
    if w.world > 1:
        import torch.distributed as dist

        dist.all_reduce(stats)
    n = len(names)
    metrics: dict[str, Any] = {f"train/{k}": v for k, v in zip(names, (stats[:n] / w.world).tolist())}
    metrics.update({
        "epoch": epoch, "global_step": state.global_step, "start_epoch": state.start_epoch,
        "lr": state.optimizer.param_groups[0]["lr"], "images_per_second": float(stats[n]),
        "data_wait_share": float(stats[n + 1]) / w.world, "steps": int(stats[n + 2] / w.world),
        "skipped_steps": int(stats[n + 3]) // w.world, "images": int(stats[n + 4]),
    })
    return metrics


def _validate(w: Worker, state: State, val_info: DataInfo, info: DataInfo, epoch: int) -> dict[str, float]:
    """Validation metrics (``val/...``, ``val_AP``, ``best_val_AP``) when this epoch evaluates."""
    cfg = w.cfg
    out: dict[str, float] = {}
    if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
        val, preview = evaluate_distributed(state.module, val_info, rank=w.rank, world_size=w.world,
                                            batch_size=cfg.batch_size, device=w.device,
                                            preview_images=cfg.preview_images)
        if val is not None:
            out.update({f"val/{k}": v for k, v in val.items()})
            state.best_ap = val["AP"] if not state.best_ap >= val["AP"] else state.best_ap
            if w.logger is not None and preview is not None:
                _log_preview(w.logger, preview, info, epoch)
    best = state.best_ap if math.isfinite(state.best_ap) else -1.0
    out["val_AP"] = float(out.get("val/AP", best))
    out["best_val_AP"] = best
    return out


def _log_preview(logger: Any, preview: Any, info: DataInfo, epoch: int) -> None:
    import matplotlib.pyplot as plt

    from centernet.data import CategoryMap
    from workflows.tracking import preview_figure

    fig = preview_figure(*preview, CategoryMap.from_dict(info.classes).names)
    try:
        logger.log_figure(fig, f"previews/epoch_{epoch:04d}.png")
    finally:
        plt.close(fig)


def _report(w: Worker, state: State, info: DataInfo, val_info: DataInfo | None, epoch: int) -> None:
    """``ray.train.report`` the epoch's metrics and ``epochs_done``, with a checkpoint (written by
    rank 0) when due."""
    import ray.train

    from centernet.checkpoint import save_checkpoint

    cfg = w.cfg
    metrics = {k: v for k, v in state.metrics.items() if isinstance(v, (int, float))}
    metrics["epochs_done"] = epoch + 1  # what Tune's schedulers count (its own iteration restarts on resume)
    if (epoch + 1) % cfg.checkpoint_every and epoch != cfg.epochs - 1:
        ray.train.report(metrics)
        return
    with staging_dir() as tmp:
        ckpt = None
        if w.rank == 0:
            extra = {"config": cfg.to_dict(), "arch": cfg.arch, "classes": info.classes,
                     "num_classes": len(info.classes["category_ids"]),
                     "input_size": [info.input_size, info.input_size], "data_hash": info.data_hash,
                     "val_data_hash": val_info.data_hash if val_info is not None else None,
                     "global_step": state.global_step, "best_ap": state.best_ap, "metrics": metrics}
            save_checkpoint(Path(tmp) / CHECKPOINT_FILE, state.module, optimizer=state.optimizer,
                            scheduler=state.scheduler, epoch=epoch, extra=extra)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:04d}")
