"""Detections on whole images: letterbox to the input size, predict, map boxes back to the image.

The test-time path of the official ``ctdet`` detector for images that are not in a dataset (files a
user points at, images posted to a server): one letterbox affine per image, a batched forward pass
and decode (:func:`centernet.inference.predict`), and boxes in the original image's pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from centernet.data import CategoryMap
from centernet.decode import boxes_to_original, to_coco_results
from centernet.inference import predict
from centernet.sample import letterbox_view


def letterbox_image(image_bgr: np.ndarray, input_size: tuple[int, int],
                    down_ratio: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """uint8 BGR ``[H0, W0, 3]`` -> (``[H, W, 3]`` uint8 at ``input_size`` (H, W), ``[2, 3]`` float64
    affine from output-map pixels back to original pixels), the deterministic test-time letterbox."""
    image, _, back = letterbox_view(image_bgr, np.zeros((0, 4), np.float32), input_size, down_ratio)
    return image, back


def autocast_for(device: torch.device | str, amp_dtype: torch.dtype | None):
    """``torch.autocast`` on CUDA with ``amp_dtype``; a no-op context otherwise."""
    device = torch.device(device)
    if amp_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype)


@torch.no_grad()
def detect_batch(
    model: nn.Module,
    images: Tensor,
    affines: np.ndarray,
    image_sizes: Sequence[tuple[int, int] | None],
    *,
    k: int = 100,
    flip_test: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> list[np.ndarray]:
    """Letterboxed images ``[B, 3, H, W]`` (uint8 BGR or normalised, on the model's device) ->
    per image ``[K, 6]`` float64 x1 y1 x2 y2 score class-index in original pixels, clipped to the
    image when its (H0, W0) is given. ``affines`` ``[B, 2, 3]`` map output-map px to original px."""
    with autocast_for(images.device, amp_dtype):
        dets = predict(model, images, k=k, flip_test=flip_test)  # [B, K, 6] output-map px (float32)
    dets_np = dets.float().cpu().numpy()
    return [boxes_to_original(d, np.asarray(a, np.float64), hw)
            for d, a, hw in zip(dets_np, affines, image_sizes)]


def detect_images(
    model: nn.Module,
    images_bgr: Sequence[np.ndarray],
    input_size: tuple[int, int],
    *,
    k: int = 100,
    flip_test: bool = False,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> list[np.ndarray]:
    """uint8 BGR images ``[H0, W0, 3]`` (any sizes) -> per image ``[K, 6]`` detections in its pixels
    (x1 y1 x2 y2 score class-index), in batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    out: list[np.ndarray] = []
    for start in range(0, len(images_bgr), batch_size):
        chunk = images_bgr[start:start + batch_size]
        boxed = [letterbox_image(check_bgr_image(im, start + i), input_size) for i, im in enumerate(chunk)]
        batch = torch.from_numpy(np.stack([b[0] for b in boxed])).permute(0, 3, 1, 2).to(device)  # [B, 3, H, W]
        affines = np.stack([b[1] for b in boxed])  # [B, 2, 3]
        out += detect_batch(model, batch, affines, [im.shape[:2] for im in chunk], k=k, flip_test=flip_test,
                            amp_dtype=amp_dtype)
    return out


def check_bgr_image(image: np.ndarray, index: int = 0) -> np.ndarray:
    """``image`` as uint8 ``[H, W, 3]`` BGR (a ``[H, W]`` grayscale image is expanded); ``ValueError``
    naming the image's position and shape otherwise."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
        raise ValueError(f"image {index}: expected a uint8 BGR array [H, W, 3], got dtype {array.dtype} "
                         f"shape {tuple(array.shape)}")
    return array


def named_results(dets: np.ndarray, image_id: int, categories: CategoryMap,
                  score_threshold: float = 0.0) -> list[dict[str, Any]]:
    """Detections ``[K, 6]`` in original pixels -> COCO result dicts (dataset category ids, boxes
    x y w h) with the category's name added as ``category_name``; scores above the threshold."""
    names = dict(zip(categories.category_ids, categories.names))
    return [{**r, "category_name": names[r["category_id"]]}
            for r in to_coco_results(dets, image_id, categories, score_threshold)]
