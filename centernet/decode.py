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


def decode_probs(heat: Tensor, wh: Tensor, reg: Tensor, k: int = 100) -> Tensor:
    """Like :func:`decode` but from heatmap probabilities ``[B, C, H, W]`` (already sigmoid)."""
    b, c, h, w = heat.shape
    k = min(k, c * h * w)
    peaks = peak_nms(heat.float())
    scores, inds = torch.topk(peaks.reshape(b, -1), k)  # [B, K] over C*H*W
    classes = torch.div(inds, h * w, rounding_mode="floor")  # [B, K]
    pix = inds % (h * w)  # [B, K] flat pixel index y*W + x
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

    Args:
        hm_logits: ``[B, C, H, W]`` heatmap logits.
        wh: ``[B, 2, H, W]`` box sizes (w, h) in output pixels.
        reg: ``[B, 2, H, W]`` sub-pixel center offsets.
        k: detections per image (top-k over all C*H*W peak scores), sorted by score.
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
    ``get_affine_transform(c, s, 0, out_size, inv=1)``). Boxes are clipped to the image if its
    (H, W) is given.
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
