"""Turning head outputs into boxes: 3x3 max-pool peaks, top-K, flip-test merging, back-mapping."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from centernet.data import CategoryMap, xyxy_to_xywh
from centernet.losses import gather_at
from centernet.transforms import transform_boxes


def peak_nms(heat: Tensor, kernel: int = 3) -> Tensor:
    """Keep only local maxima of heat ``[B, C, H, W]`` (3x3 max-pool equality), zero elsewhere."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (hmax == heat).to(heat.dtype)


def top_peaks(peaks: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` highest of ``peaks`` ``[B, C, H, W]`` over C*H*W, as the official ``_topk``.

    Two stages, as the official code: the top ``k`` of each class, then the top ``k`` of those. The
    scores equal those of one top-k over C*H*W; among equal scores the same peaks are picked as by
    the official decode, whose two ``torch.topk`` calls these are. ``k`` is capped at C*H*W.
    Returns scores ``[B, K]`` (descending), classes ``[B, K]`` and flat pixel indices ``[B, K]``
    (y * W + x), both int64.
    """
    b, c, h, w = peaks.shape
    k_class = min(k, h * w)
    class_scores, class_pix = torch.topk(peaks.reshape(b, c, h * w), k_class)  # [B, C, Kc]
    scores, picked = torch.topk(class_scores.reshape(b, c * k_class), min(k, c * k_class))  # [B, K]
    classes = torch.div(picked, k_class, rounding_mode="floor")  # [B, K]
    pix = class_pix.reshape(b, c * k_class).gather(1, picked)  # [B, K]
    return scores, classes, pix


def decode_probs(heat: Tensor, wh: Tensor, reg: Tensor, k: int = 100) -> Tensor:
    """Like :func:`decode` but from heatmap probabilities ``[B, C, H, W]`` (already sigmoid)."""
    w = heat.shape[3]
    scores, classes, pix = top_peaks(peak_nms(heat.float()), k)  # [B, K] each
    ys = torch.div(pix, w, rounding_mode="floor").float()
    xs = (pix % w).float()
    off = gather_at(reg.float(), pix)  # [B, K, 2]
    size = gather_at(wh.float(), pix)  # [B, K, 2]
    cx, cy = xs + off[..., 0], ys + off[..., 1]
    boxes = torch.stack(
        [cx - size[..., 0] / 2, cy - size[..., 1] / 2, cx + size[..., 0] / 2, cy + size[..., 1] / 2],
        dim=2,
    )  # [B, K, 4]
    return torch.cat([boxes, scores.unsqueeze(2), classes.float().unsqueeze(2)], dim=2)  # [B, K, 6]


def decode(hm_logits: Tensor, wh: Tensor, reg: Tensor, k: int = 100) -> Tensor:
    """Detections ``[B, K, 6]`` (x1 y1 x2 y2 score class) in output-map pixels.

    The official ``ctdet_decode`` on ``sigmoid(hm_logits)`` (checked against its outputs in the tests).

    Args:
        hm_logits: ``[B, C, H, W]`` heatmap logits.
        wh: ``[B, 2, H, W]`` box sizes (w, h) in output pixels.
        reg: ``[B, 2, H, W]`` sub-pixel center offsets.
        k: detections per image (top-k over all C*H*W peak scores, see :func:`top_peaks`), sorted
            by score; capped at C*H*W.
    """
    return decode_probs(torch.sigmoid(hm_logits.float()), wh, reg, k)


def flip_merge(outputs: dict[str, Tensor], outputs_flipped: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Merge a forward pass with one on the horizontally flipped images, as the official flip test.

    Heatmap probabilities and sizes are averaged with the un-flipped flipped pass; the offset is
    taken from the original pass only. Returns (heat probs ``[B,C,H,W]``, wh ``[B,2,H,W]``, reg).
    """
    heat = (torch.sigmoid(outputs["hm"].float()) + torch.sigmoid(outputs_flipped["hm"].float()).flip(3)) / 2
    wh = (outputs["wh"].float() + outputs_flipped["wh"].float().flip(3)) / 2
    return heat, wh, outputs["reg"].float()


def boxes_to_original(dets: np.ndarray, affine: np.ndarray, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Map detections ``[K, 6]`` from output-map pixels to original-image pixels.

    ``affine`` ``[2, 3]`` maps output-map pixels to the original image (the official
    ``get_affine_transform(c, s, 0, out_size, inv=1)``). With ``image_hw=None`` the boxes are left
    as mapped, as the official post-processing (``ctdet_post_process``) leaves them. Given the
    image's (H, W) they are clipped to it: a deviation from the official code, which this project's
    evaluation makes (``centernet.inference`` passes the image sizes); clipping never lowers a box's
    IoU with a ground-truth box inside the image, so it can change AP slightly.
    """
    out = np.array(dets, dtype=np.float64).reshape(-1, 6)
    out[:, :4] = transform_boxes(out[:, :4], affine)
    if image_hw is not None:
        h, w = image_hw
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def to_coco_results(
    dets: np.ndarray, image_id: int, categories: CategoryMap, score_threshold: float = 0.0
) -> list[dict[str, Any]]:
    """Detections ``[K, 6]`` in original-image pixels -> COCO result dicts with dataset category ids."""
    dets = np.asarray(dets).reshape(-1, 6)
    keep = dets[dets[:, 4] > score_threshold]
    xywh = xyxy_to_xywh(keep[:, :4])
    cat_ids = categories.to_category_ids(keep[:, 5].astype(np.int64))
    return [
        {"image_id": int(image_id), "category_id": int(c), "bbox": [round(float(v), 2) for v in box],
         "score": round(float(s), 5)}
        for box, s, c in zip(xywh, keep[:, 4], cat_ids)
    ]
