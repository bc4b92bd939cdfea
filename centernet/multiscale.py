"""Multi-scale testing as the official ``ctdet`` detector does it.

Each scale s runs the network on the letterboxed input resized to ``s`` times its size (rounded up
to a multiple of 32); its top-K detections are mapped to original-image pixels; detections of all
scales are merged per class with Gaussian soft-NMS (the official ``merge_outputs``:
``soft_nms(results[j], Nt=0.5, method=2)`` when there is more than one scale) and the best
``max_per_image`` over all classes are kept.

Two documented differences from the official code: the official ``merge_outputs`` ignores the
index list ``soft_nms`` returns, so the rows soft-NMS dropped (score decayed below 0.001) stay in
its output as stale copies of other rows; here they are dropped. And the scales resize the
letterboxed network input rather than the original image (the official ``--keep_res`` test resizes
the original and pads it to a multiple of 32), so one loader feeds every scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from centernet.data import CategoryMap
from centernet.decode import boxes_to_original, to_coco_results
from centernet.inference import predict
from centernet.transforms import INPUT_SIZE_MULTIPLE, normalize_batch

SOFT_NMS_METHODS = ("hard", "linear", "gaussian")


def soft_nms(
    dets: np.ndarray,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
) -> np.ndarray:
    """Soft-NMS (Bodla et al. 2017) with the official CenterNet/Cython semantics.

    Args:
        dets: ``[N, 5]`` x1 y1 x2 y2 score (extra columns are carried along).
        method: "gaussian" (score *= exp(-iou^2 / sigma)), "linear" (score *= 1 - iou above
            ``iou_threshold``) or "hard" (dropped above ``iou_threshold``).
        score_threshold: an overlapping box whose decayed score falls below it is dropped.

    Returns ``[M, D]`` rows in selection order (highest remaining score first) with decayed scores.
    IoU uses the official "+1" pixel convention (areas ``(x2 - x1 + 1) * (y2 - y1 + 1)``); a box that
    does not overlap the selected one is left unchanged, as in the official loop.
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {SOFT_NMS_METHODS}, got {method!r}")
    live = np.array(dets, dtype=np.float64)
    if live.ndim != 2 or live.shape[1] < 5:
        raise ValueError(f"dets must be [N, 5+] (x1 y1 x2 y2 score ...), got shape {live.shape}")
    kept: list[np.ndarray] = []
    while len(live):
        best = int(np.argmax(live[:, 4]))  # first of equal maxima, as the official strict '<'
        top = live[best]
        kept.append(top)
        live = np.delete(live, best, axis=0)
        iw = np.minimum(top[2], live[:, 2]) - np.maximum(top[0], live[:, 0]) + 1
        ih = np.minimum(top[3], live[:, 3]) - np.maximum(top[1], live[:, 1]) + 1
        overlaps = (iw > 0) & (ih > 0)
        inter = np.where(overlaps, iw * ih, 0.0)
        area = (live[:, 2] - live[:, 0] + 1) * (live[:, 3] - live[:, 1] + 1)
        union = (top[2] - top[0] + 1) * (top[3] - top[1] + 1) + area - inter
        iou = np.where(overlaps, inter / np.where(union > 0, union, 1.0), 0.0)
        if method == "gaussian":
            weight = np.exp(-(iou * iou) / sigma)
        elif method == "linear":
            weight = np.where(iou > iou_threshold, 1.0 - iou, 1.0)
        else:
            weight = np.where(iou > iou_threshold, 0.0, 1.0)
        weight = np.where(overlaps, weight, 1.0)
        live[:, 4] *= weight
        live = live[~(overlaps & (live[:, 4] < score_threshold))]
    return np.stack(kept) if kept else np.zeros((0, np.shape(dets)[1] if np.ndim(dets) == 2 else 6))


def merge_detections(per_scale: Sequence[np.ndarray], *, nms: bool, max_per_image: int = 100) -> np.ndarray:
    """The official ``merge_outputs``: per-scale detections ``[K_s, 6]`` (x1 y1 x2 y2 score class,
    original pixels) -> ``[M, 6]``, per class concatenated and (``nms``) Gaussian soft-NMS'd with
    Nt=0.5, then the ``max_per_image`` best over all classes (ties at the cut kept), by score."""
    dets = np.concatenate([np.asarray(d, np.float64).reshape(-1, 6) for d in per_scale]) if per_scale \
        else np.zeros((0, 6))
    if nms and len(dets):
        dets = np.concatenate([soft_nms(dets[dets[:, 5] == c], method="gaussian", iou_threshold=0.5)
                               for c in np.unique(dets[:, 5])])
    if len(dets) > max_per_image:
        kth = len(dets) - max_per_image
        dets = dets[dets[:, 4] >= np.partition(dets[:, 4], kth)[kth]]
    return dets[np.argsort(-dets[:, 4], kind="stable")]


def scaled_input_size(input_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) of the network input at ``scale``: ``scale`` x the size, rounded up to a multiple of 32."""
    if not scale > 0:
        raise ValueError(f"test scales must be > 0, got {scale!r}")
    m = INPUT_SIZE_MULTIPLE
    return tuple(max(m, math.ceil(side * scale / m) * m) for side in input_hw)  # type: ignore[return-value]


def to_base_output_pixels(dets: np.ndarray, scaled_hw: tuple[int, int], base_hw: tuple[int, int],
                          down_ratio: int = 4) -> np.ndarray:
    """Detections ``[..., 6]`` in output-map px of an input resized (bilinear, half-pixel centres,
    as ``F.interpolate(align_corners=False)``) from ``base_hw`` to ``scaled_hw`` -> output-map px of
    the base input. Input px u_s maps to u = (u_s + 0.5) * base / scaled - 0.5; input = 4 x output."""
    out = np.array(dets, dtype=np.float64)
    for cols, scaled, base in (([0, 2], scaled_hw[1], base_hw[1]), ([1, 3], scaled_hw[0], base_hw[0])):
        ratio = base / scaled
        out[..., cols] = ((out[..., cols] * down_ratio + 0.5) * ratio - 0.5) / down_ratio
    return out


@torch.no_grad()
def predict_multiscale(
    model: nn.Module,
    images: Tensor,
    affines: np.ndarray,
    scales: Sequence[float],
    *,
    image_sizes: Sequence[tuple[int, int] | None] | None = None,
    k: int = 100,
    flip_test: bool = False,
    max_per_image: int = 100,
) -> list[np.ndarray]:
    """Letterboxed images ``[B, 3, H, W]`` (uint8 BGR or normalised) and their affines ``[B, 2, 3]``
    (output-map px -> original px) -> per image merged detections ``[M, 6]`` in original pixels
    (clipped to the image when its (H0, W0) is in ``image_sizes``)."""
    if not scales:
        raise ValueError("scales must name at least one test scale, e.g. (0.5, 0.75, 1, 1.25, 1.5)")
    x = normalize_batch(images)
    b, _, h, w = x.shape
    sizes = list(image_sizes) if image_sizes is not None else [None] * b
    per_image: list[list[np.ndarray]] = [[] for _ in range(b)]
    for scale in scales:
        hw = scaled_input_size((h, w), scale)
        scaled = x if hw == (h, w) else F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
        dets = predict(model, scaled, k=k, flip_test=flip_test).float().cpu().numpy()  # [B, K, 6]
        if hw != (h, w):
            dets = to_base_output_pixels(dets, hw, (h, w))
        for i in range(b):
            per_image[i].append(boxes_to_original(dets[i], np.asarray(affines[i], np.float64), sizes[i]))
    return [merge_detections(p, nms=len(scales) > 1, max_per_image=max_per_image) for p in per_image]


def predict_loader_multiscale(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    categories: CategoryMap,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
    *,
    scales: Sequence[float],
    device: torch.device | str = "cpu",
    k: int = 100,
    flip_test: bool = False,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Like :func:`centernet.inference.predict_loader`, with multi-scale testing: COCO result dicts
    (original pixels, dataset category ids) of every image the loader yields, and their ids."""
    model.eval()
    results: list[dict[str, Any]] = []
    seen: list[int] = []
    for batch in loader:
        ids = [int(i) for i in batch["image_id"]]
        sizes = [image_sizes.get(i) if image_sizes else None for i in ids]
        dets = predict_multiscale(model, batch["image"].to(device), np.asarray(batch["affine"]), scales,
                                  image_sizes=sizes, k=k, flip_test=flip_test)
        for det, image_id in zip(dets, ids):
            results += to_coco_results(det, image_id, categories)
        seen += ids
    return results, seen
