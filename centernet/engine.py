"""The plain-PyTorch training loop: one step function and one epoch function.

Ray Train workers call these unchanged (``workflows/train``); the demo calls them directly. The
learning-rate defaults and schedules live in :mod:`centernet.schedule`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from centernet.batch import dense_heatmaps
from centernet.color import ColorAugment, to_network_input
from centernet.losses import LOSS_NAMES, CenterNetLoss, combine_losses
from centernet.schedule import DEFAULT_MAX_GRAD_NORM

TARGET_KEYS = ("image", "hm", "wh", "reg", "ind", "mask")


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, as the official trainer (its fused CUDA kernel when the model is on a GPU)."""
    params = list(model.parameters())
    return torch.optim.Adam(params, lr=lr, fused=bool(params) and all(p.is_cuda for p in params))


@dataclass(frozen=True)
class StepResult:
    """One optimisation step: unweighted losses, the weighted total, and whether it was skipped."""

    losses: dict[str, float]
    total: float
    skipped: bool
    grad_norm: float
    batch_size: int


def move_batch(batch: Mapping[str, Tensor], device: torch.device | str, *,
               color: ColorAugment | None = None,
               memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, Tensor]:
    """The tensors a step needs, on ``device`` (non-blocking copies; pin the batch for CUDA).

    "image": uint8 BGR ``[B, 3, H, W]`` (any strides) is normalised on ``device`` into a float32
    batch in ``memory_format`` (``torch.channels_last`` for a channels-last model), with ``color`` (training only) the official colour augmentation applied between
    ``/ 255`` and the standardisation (its parameters keyed by the batch's "image_id" and "view");
    an already normalised float32 batch is moved as it is. "hm":
    a dense batch's is moved, a sparse one (:func:`centernet.batch.collate_samples`) is rendered on
    ``device`` (:func:`centernet.batch.dense_heatmaps`).
    """
    moved = {k: batch[k].to(device, non_blocking=True) for k in ("wh", "reg", "ind", "mask")}
    moved["hm"] = dense_heatmaps(batch, device)
    image = batch["image"].to(device, non_blocking=True)
    if color is not None and (image.dtype != torch.uint8 or "image_id" not in batch):
        raise ValueError("colour augmentation needs the uint8 images and the image ids the readers yield, got "
                         f"{image.dtype} images and keys {sorted(batch)}")
    if color is not None:  # per-sample parameters keyed by (image id, view): independent of the batching
        image = color(image, batch["image_id"].tolist(), batch["view"].tolist() if "view" in batch else None,
                      memory_format=memory_format)
    elif image.dtype == torch.uint8:
        image = to_network_input(image, memory_format=memory_format)
    else:
        image = image.contiguous(memory_format=memory_format)
    moved["image"] = image
    return moved


def train_step(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    *,
    criterion: CenterNetLoss,
    optimizer: torch.optim.Optimizer,
    weights: Mapping[str, float],
    max_grad_norm: float | None = DEFAULT_MAX_GRAD_NORM,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """Forward, loss, backward and update on one batch already on the model's device.

    A step whose loss or gradient norm is not finite is skipped and reported as such: no update,
    and the model's buffers (BatchNorm running statistics, which the forward pass already changed)
    are put back, so a single bad batch cannot poison the model. Under ``torch.distributed`` the
    decision is collective: every rank skips the same steps (see :func:`_finite_flag`).
    ``amp_dtype`` enables autocast on CUDA (bf16, or fp16 together with a ``scaler``).
    """
    model.train()
    buffers = [b.detach().clone() for b in model.buffers()]
    device_type = batch["image"].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        outputs = model(batch["image"])
    losses = criterion(outputs, batch)  # computed in float32
    total = combine_losses(losses, weights)
    # One host sync for the loss values and the finiteness decision together.
    host = torch.cat([torch.stack([losses[k].detach() for k in LOSS_NAMES] + [total.detach()]).float(),
                      _finite_flag(total.detach())]).tolist()  # [len(LOSS_NAMES) + 2]
    values = dict(zip(LOSS_NAMES, host[:len(LOSS_NAMES)]))
    total_value, finite = host[-2], host[-1] == 1.0
    n = int(batch["image"].shape[0])
    optimizer.zero_grad(set_to_none=True)
    if not finite:
        # Decided before backward: under DDP, backward all-reduces gradients, so a rank that skipped
        # it alone would leave the others waiting (or pair their buckets with the next step's).
        _restore(model.buffers(), buffers)
        return StepResult(values, total_value, True, float("nan"), n)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    # Under DDP the gradients are already all-reduced (identical on every rank) when backward
    # returns, so this norm, and the skip decided from it, is the same on every rank.
    grad_norm = _grad_norm(model, max_grad_norm)
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        _restore(model.buffers(), buffers)
        if scaler is not None:
            scaler.update()  # lets the scaler lower its scale after an overflow
        return StepResult(values, total_value, True, grad_norm, n)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return StepResult(values, total_value, False, grad_norm, n)


def _finite_flag(loss: Tensor) -> Tensor:
    """``[1]`` float32 on the loss's device: 1.0 where ``loss`` is finite on this rank and, under
    ``torch.distributed``, on every rank (an all-reduce MIN, so all ranks take the same decision)."""
    flag = torch.isfinite(loss).to(torch.float32).reshape(1)  # [1]
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag


@torch.no_grad()
def _restore(targets: Iterable[Tensor], saved: list[Tensor]) -> None:
    for target, value in zip(targets, saved):
        target.copy_(value)


def _grad_norm(model: nn.Module, max_norm: float | None) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is None:
        return float(torch.nn.utils.get_total_norm([p.grad.detach() for p in params])) if params else 0.0
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


@dataclass
class EpochResult:
    """Aggregates of one epoch: mean unweighted losses over the steps taken, counts and timing."""

    steps: int = 0
    skipped_steps: int = 0
    images: int = 0
    seconds: float = 0.0
    data_wait_seconds: float = 0.0
    loss_sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in (*LOSS_NAMES, "total")})

    @property
    def mean_losses(self) -> dict[str, float]:
        taken = max(1, self.steps - self.skipped_steps)
        return {k: v / taken for k, v in self.loss_sums.items()}

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_seconds / self.seconds if self.seconds > 0 else 0.0


def train_epoch(
    model: nn.Module,
    loader: Iterable[Mapping[str, Tensor]],
    *,
    criterion: CenterNetLoss,
    optimizer: torch.optim.Optimizer,
    weights: Mapping[str, float],
    device: torch.device | str,
    max_grad_norm: float | None = DEFAULT_MAX_GRAD_NORM,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_step: Callable[[int, StepResult], None] | None = None,
    max_steps: int | None = None,
    color: ColorAugment | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> EpochResult:
    """Run :func:`train_step` over ``loader``; ``on_step(step_index, result)`` after each step.

    ``scheduler`` (per-step, :func:`centernet.schedule.make_lr_scheduler`) is stepped after each
    step that updated the weights; skipped steps do not advance it (under DDP all ranks skip the
    same steps, so their schedules stay equal). Time spent waiting for the loader is measured
    separately (``data_wait_share``).
    ``color``: the training colour augmentation :func:`move_batch` applies (``None``: off);
    ``memory_format``: the images' layout on the device (``torch.channels_last`` for a channels-last model).
    """
    result = EpochResult()
    start = time.perf_counter()
    iterator = iter(loader)
    while max_steps is None or result.steps < max_steps:
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        result.data_wait_seconds += time.perf_counter() - t0
        step = train_step(model, move_batch(batch, device, color=color, memory_format=memory_format), criterion=criterion, optimizer=optimizer,
                          weights=weights, max_grad_norm=max_grad_norm, amp_dtype=amp_dtype, scaler=scaler)
        result.steps += 1
        result.images += step.batch_size
        if step.skipped:
            result.skipped_steps += 1
        else:
            if scheduler is not None:
                scheduler.step()
            for k, v in step.losses.items():
                result.loss_sums[k] += v
            result.loss_sums["total"] += step.total
        if on_step is not None:
            on_step(result.steps - 1, step)
    result.seconds = time.perf_counter() - start
    return result
