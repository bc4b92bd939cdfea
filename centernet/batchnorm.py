"""Batch-norm behaviour for data-parallel training: per-replica, frozen statistics, or synchronised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BATCHNORM_MODES = ("batch", "frozen", "sync")


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with its running statistics even in train mode (the affine
    weight and bias still train), so each sample's gradient is independent of its batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W]
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


def apply_batchnorm_mode(model: nn.Module, mode: str) -> nn.Module:
    """``"batch"``: unchanged (per-replica statistics, as the official multi-GPU training);
    ``"frozen"``: :class:`FrozenStatsBatchNorm2d` in place of every ``BatchNorm2d``;
    ``"sync"``: ``SyncBatchNorm`` (GPU process groups only)."""
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm mode must be one of {BATCHNORM_MODES}, got {mode!r}")
    if mode == "sync":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if mode == "frozen":
        for m in model.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = FrozenStatsBatchNorm2d
    return model
