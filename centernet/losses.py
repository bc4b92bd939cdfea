"""CenterNet losses: modified focal loss on the heatmap, L1 on size and offset.

:class:`CenterNetLoss` returns the *unweighted* losses ``{"hm", "wh", "reg"}``; :func:`combine_losses`
applies a weight dict (DETR style), which is what a search over loss weights varies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"hm": 1.0, "wh": 0.1, "reg": 1.0}
LOSS_NAMES = ("hm", "wh", "reg")
_EPS = 1e-4  # the official sigmoid clamp


def focal_loss(logits: Tensor, gt: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """Modified focal loss of CornerNet/CenterNet (the official ``_neg_loss``).

    Args:
        logits: ``[B, C, H, W]`` heatmap logits.
        gt: ``[B, C, H, W]`` Gaussian targets, exactly 1 at object centers.

    The probability is ``sigmoid(logits)`` clamped to [1e-4, 1 - 1e-4]; its logs are computed in
    log-space (same values, no overflow under mixed precision). The sum over pixels is divided by
    the number of positives, or by 1 when there are none (then only the negative term remains).
    """
    logits = logits.float()
    gt = gt.float()
    pred = torch.sigmoid(logits).clamp(_EPS, 1 - _EPS)
    log_p = F.logsigmoid(logits).clamp(math.log(_EPS), math.log1p(-_EPS))
    log_1mp = F.logsigmoid(-logits).clamp(math.log(_EPS), math.log1p(-_EPS))
    pos = gt.eq(1).float()
    neg = 1.0 - pos  # gt < 1 (targets never exceed 1)
    pos_loss = (log_p * (1 - pred).pow(alpha) * pos).sum()
    neg_loss = (log_1mp * pred.pow(alpha) * (1 - gt).pow(beta) * neg).sum()
    num_pos = pos.sum()
    return -(pos_loss + neg_loss) / num_pos.clamp(min=1.0)


def gather_at(feat: Tensor, ind: Tensor) -> Tensor:
    """feat ``[B, D, H, W]`` gathered at flat indices ind ``[B, K]`` -> ``[B, K, D]``."""
    b, d = feat.shape[:2]
    flat = feat.reshape(b, d, -1)  # [B, D, H*W]
    idx = ind.long().unsqueeze(1).expand(b, d, ind.shape[1])  # [B, D, K]
    return flat.gather(2, idx).permute(0, 2, 1)  # [B, K, D]


def reg_l1_loss(pred: Tensor, ind: Tensor, mask: Tensor, target: Tensor) -> Tensor:
    """L1 loss at object centers (the official ``RegL1Loss``).

    Args:
        pred: ``[B, 2, H, W]`` predicted map.
        ind: ``[B, K]`` flat center indices (y * W + x).
        mask: ``[B, K]`` 1 for real objects.
        target: ``[B, K, 2]``.

    Returns ``sum |pred - target|`` over masked entries / (2 * num_objects + 1e-4).
    """
    gathered = gather_at(pred.float(), ind)  # [B, K, 2]
    m = mask.float().unsqueeze(2).expand_as(gathered)  # [B, K, 2]
    loss = F.l1_loss(gathered * m, target.float() * m, reduction="sum")
    return loss / (m.sum() + 1e-4)


class CenterNetLoss(nn.Module):
    """Unweighted ctdet losses of a model's output: a list of head dicts, one per stack (one for
    ResNet/DLA, two for Hourglass), averaged over the stacks (intermediate supervision)."""

    def forward(self, outputs: Sequence[Mapping[str, Tensor]], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(outputs, Mapping) or not outputs:
            got = "a single dict" if isinstance(outputs, Mapping) else "an empty list"
            raise ValueError(f"outputs must be a non-empty list of head dicts (one per stack), got {got}")
        totals = {name: torch.zeros((), device=batch["hm"].device) for name in LOSS_NAMES}
        for out in outputs:
            totals["hm"] = totals["hm"] + focal_loss(out["hm"], batch["hm"])
            totals["wh"] = totals["wh"] + reg_l1_loss(out["wh"], batch["ind"], batch["mask"], batch["wh"])
            totals["reg"] = totals["reg"] + reg_l1_loss(out["reg"], batch["ind"], batch["mask"], batch["reg"])
        return {name: value / len(outputs) for name, value in totals.items()}


def validate_loss_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Complete a partial weight dict with the defaults; ``ValueError`` on unknown names or negatives."""
    unknown = set(weights) - set(LOSS_NAMES)
    if unknown:
        raise ValueError(f"unknown loss names {sorted(unknown)}; valid: {list(LOSS_NAMES)}")
    merged = {**DEFAULT_LOSS_WEIGHTS, **{k: float(v) for k, v in weights.items()}}
    bad = {k: v for k, v in merged.items() if not (v >= 0 and math.isfinite(v))}
    if bad:
        raise ValueError(f"loss weights must be finite and >= 0, got {bad}")
    return merged


def combine_losses(losses: Mapping[str, Tensor], weights: Mapping[str, float] | None = None) -> Tensor:
    """Weighted sum of the unweighted loss dict (default weights hm 1, wh 0.1, reg 1)."""
    w = DEFAULT_LOSS_WEIGHTS if weights is None else weights
    return sum(w[name] * losses[name] for name in LOSS_NAMES)
