"""Training defaults and learning-rate schedules: the one place that says how fast a model learns.

* :func:`default_lr` — the official 1.25e-4 per 32 images for pretrained backbones; a measured,
  higher rate when training from scratch (the official rate barely moves random weights).
* :func:`default_lr_steps` — the official milestones (90 and 120 of 140 epochs) as fractions of
  any epoch count.
* :func:`make_lr_scheduler` — a per-step ``LambdaLR``: a linear warmup, then x0.1 at each
  milestone (``kind="step"``) or a cosine decay (``kind="cosine"``). It is stepped after every
  optimisation step (``centernet.engine.train_epoch(scheduler=...)``) and checkpoints with its
  ``state_dict()``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

OFFICIAL_BASE_LR = 1.25e-4  # Adam, for a global batch of 32 (official README)
OFFICIAL_BASE_BATCH = 32
OFFICIAL_EPOCHS = 140
OFFICIAL_LR_STEPS = (90, 120)  # x0.1 after these epochs of 140 (official ``--lr_step 90,120``)

# From random initialisation, per 32 images (linear rule, like the official rate): 1e-3 at batch 16.
# Measured on the demo (synthetic shapes, ResNet-18 from scratch, batch 16, 36 epochs; README
# "Training defaults"): AP50 0.87 with these defaults, 0.71 with the official 1.25e-4 x 16/32 and no
# warmup. After 12 epochs, 2e-3 and 4e-3 per 32 reach the same AP; the lower one is kept.
SCRATCH_BASE_LR = 2e-3
# Linear warmup over the first optimisation steps (from scratch and pretrained alike). On the demo's
# 12-epoch run it raised AP50 from 0.61 (no warmup) to 0.71.
DEFAULT_WARMUP_STEPS = 100
# Gradient-norm clipping: None, as the official code. mmdetection's CenterNet clips at 35; on the demo
# the norm exceeded 35 only in 1-4 of the first 100 steps (median 3-4) and clipping changed AP50 by
# 0.01 (0.70 vs 0.71), so it is off by default (a non-finite norm still skips the step).
DEFAULT_MAX_GRAD_NORM: float | None = None

SCHEDULE_KINDS = ("step", "cosine")
LR_GAMMA = 0.1


def scaled_lr(batch_size: int, base_lr: float = OFFICIAL_BASE_LR, base_batch: int = OFFICIAL_BASE_BATCH) -> float:
    """``base_lr`` scaled linearly with the (global) batch size (official: 1.25e-4 @ 32)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return base_lr * batch_size / base_batch


def default_lr(global_batch: int, pretrained: bool) -> float:
    """The default Adam learning rate for a global batch: official when the backbone is pretrained
    (1.25e-4 x batch / 32), :data:`SCRATCH_BASE_LR` x batch / 32 from random initialisation."""
    return scaled_lr(global_batch, OFFICIAL_BASE_LR if pretrained else SCRATCH_BASE_LR)


def default_lr_steps(epochs: int) -> tuple[int, ...]:
    """The official milestones as fractions of ``epochs``: round(E*90/140), round(E*120/140).

    Deduplicated, and only those that take effect (1 <= m < epochs): 140 -> (90, 120), 36 -> (23, 31),
    12 -> (8, 10), 1 -> () (a one-epoch run keeps its rate).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    steps = {max(1, round(epochs * s / OFFICIAL_EPOCHS)) for s in OFFICIAL_LR_STEPS}
    return tuple(sorted(s for s in steps if s < epochs))


def lr_steps_warning(lr_steps: tuple[int, ...], epochs: int) -> str | None:
    """A one-line warning when a milestone lies at or beyond the last epoch (it never applies)."""
    late = [s for s in lr_steps if s >= epochs]
    if not late:
        return None
    return (f"lr_steps {list(late)} are at or beyond the last epoch ({epochs} epochs): the rate is never "
            f"lowered there; the default for {epochs} epochs is {list(default_lr_steps(epochs))}")


@dataclass(frozen=True)
class LRSchedule:
    """Factor of the base learning rate at optimisation step ``i`` (0-based): ``schedule(i)``.

    Warmup: ``(i + 1) / warmup_steps`` for ``i < warmup_steps`` (the full rate from step
    ``warmup_steps - 1`` on), multiplied with the decay:

    * ``"step"``: ``gamma ** (number of milestones <= i)``, ``milestones`` in optimisation steps;
    * ``"cosine"``: ``final + (1 - final) * (1 + cos(pi * t)) / 2``, ``t = i / total_steps`` clipped
      to [0, 1] (``final`` at ``i = total_steps``, after the last step).

    A plain dataclass so that ``LambdaLR.state_dict()`` saves it (checkpointable, weights_only-safe).
    """

    total_steps: int
    kind: str = "step"
    milestones: tuple[int, ...] = ()
    warmup_steps: int = 0
    gamma: float = LR_GAMMA
    final: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")

    def __call__(self, i: int) -> float:
        warm = min(1.0, (i + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind == "step":
            return warm * self.gamma ** sum(1 for m in self.milestones if i >= m)
        t = min(1.0, max(0.0, i / self.total_steps))
        return warm * (self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * t)) / 2.0)


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    kind: str = "step",
    lr_steps: tuple[int, ...] | None = None,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
    final_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over ``epochs * steps_per_epoch`` optimisation steps.

    Args:
        epochs, steps_per_epoch: the run's length (steps per epoch per rank, as the loop runs them).
        kind: ``"step"`` (x0.1 after each epoch in ``lr_steps``) or ``"cosine"`` (to
            ``final_factor`` x the base rate at the end).
        lr_steps: milestone epochs for ``"step"``; ``None`` takes :func:`default_lr_steps`. A
            milestone at or beyond the last epoch is allowed but warned about (``UserWarning``).
        warmup_steps: linear warmup length in optimisation steps (0: none).

    Call ``scheduler.step()`` after each optimisation step (``train_epoch(scheduler=...)`` does).
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs!r}, {steps_per_epoch!r}")
    if kind == "cosine" and lr_steps is not None:
        raise ValueError(f"lr_steps {lr_steps!r} apply to kind='step' only, not 'cosine'")
    milestones: tuple[int, ...] = ()
    if kind == "step":
        steps = default_lr_steps(epochs) if lr_steps is None else tuple(int(s) for s in lr_steps)
        if any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"lr_steps must be increasing epochs >= 1, got {lr_steps!r}")
        message = lr_steps_warning(steps, epochs)
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)
        milestones = tuple(s * steps_per_epoch for s in steps)
    schedule = LRSchedule(total_steps=epochs * steps_per_epoch, kind=kind, milestones=milestones,
                          warmup_steps=warmup_steps, final=final_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
