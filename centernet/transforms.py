"""Letterbox affine transforms (the official CenterNet ``get_affine_transform``), box and point
mapping, BGR normalisation, and the one input-size check (:func:`check_input_size`).

A transform is a ``[2, 3]`` float64 matrix mapping (x, y, 1) in the source image to the destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def _rotate(point: np.ndarray, rot_rad: float) -> np.ndarray:
    """``point`` (x, y) rotated by ``rot_rad``, in float64 (the official ``get_dir`` keeps float64)."""
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array(
        [point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs], dtype=np.float64
    )


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(
    center: np.ndarray | tuple[float, float],
    scale: float | np.ndarray,
    rot: float,
    output_size: tuple[int, int],
    shift: tuple[float, float] = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """Affine ``[2, 3]`` mapping a square of side ``scale`` around ``center`` onto ``output_size``.

    ``output_size`` is (width, height), as in the official code. Only the x component of ``scale``
    sets the zoom, so aspect ratio is kept (letterbox). ``inv=True`` returns the inverse mapping.
    Bit-identical to the official ``get_affine_transform`` (float32 points, the rotated direction in
    float64, OpenCV's ``getAffineTransform``), checked against its outputs in the tests.
    """
    center = np.asarray(center, dtype=np.float32)
    scale_arr = np.asarray(scale, dtype=np.float32)
    if scale_arr.ndim == 0:
        scale_arr = np.array([scale_arr, scale_arr], dtype=np.float32)
    if scale_arr[0] <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    shift_arr = np.asarray(shift, dtype=np.float32)
    src_w = scale_arr[0]
    dst_w, dst_h = float(output_size[0]), float(output_size[1])

    rot_rad = np.pi * rot / 180
    src_dir = _rotate(np.array([0, src_w * -0.5], dtype=np.float32), rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale_arr * shift_arr
    src[1, :] = center + src_dir + scale_arr * shift_arr
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5], np.float32) + dst_dir
    src[2, :] = _third_point(src[0, :], src[1, :])
    dst[2, :] = _third_point(dst[0, :], dst[1, :])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


INPUT_SIZE_MULTIPLE = 32  # total stride of the ResNet and DLA backbones (5 halvings)


def check_input_size(size: int | Sequence[int], name: str = "input_size") -> None:
    """``ValueError`` naming ``name`` and the value unless ``size`` is a positive multiple of 32.

    ``size`` is a square side (int) or an (H, W) pair. The ResNet and DLA backbones halve the input
    five times and upsample back to stride 4, so other sizes give feature maps that do not line up
    (Hourglass-104 halves it seven times and needs a multiple of 128 besides).
    """
    if _is_int(size):
        sides = (int(size),)
    elif isinstance(size, Sequence) and len(size) == 2 and all(_is_int(v) for v in size):
        sides = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{name} must be an int or an (H, W) pair of ints, got {size!r}")
    if any(v <= 0 or v % INPUT_SIZE_MULTIPLE for v in sides):
        raise ValueError(
            f"{name} must be a positive multiple of {INPUT_SIZE_MULTIPLE} (e.g. 512), got {size!r}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def letterbox_params(
    image_hw: tuple[int, int], input_hw: tuple[int, int] | None = None
) -> tuple[np.ndarray, float]:
    """(center, scale) of the test-time letterbox: the image center and the side that fits.

    For a square input (or ``input_hw=None``) this is the official longer side. For a non-square
    input the scale also makes the image's height fit (the official ``s = max(h, w)``, made for the
    square inputs of its published models, would crop a tall image in a wide input).
    """
    h, w = image_hw
    scale = float(max(h, w))
    if input_hw is not None:
        in_h, in_w = input_hw
        scale = float(max(w, h * in_w / in_h))
    return np.array([w / 2.0, h / 2.0], dtype=np.float32), scale


def warp_image(image: np.ndarray, trans: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Apply an affine to an image ``[H, W, 3]`` giving ``[size_h, size_w, 3]`` (bilinear, zero border)."""
    return cv2.warpAffine(image, trans, (int(size_wh[0]), int(size_wh[1])), flags=cv2.INTER_LINEAR)


def transform_points(points: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Apply ``trans`` ``[2, 3]`` to points ``[N, 2]`` (x, y) -> ``[N, 2]`` float64."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ trans[:, :2].T + trans[:, 2]


def transform_boxes(boxes: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Map boxes ``[N, 4]`` (x1 y1 x2 y2) through an axis-aligned affine, corners only -> ``[N, 4]``.

    Corner-wise like the official code (exact for scale + translation, which letterboxing is);
    corners are re-ordered so that x1 <= x2 and y1 <= y2 also after a mirroring affine.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    p1 = transform_points(b[:, 0:2], trans)
    p2 = transform_points(b[:, 2:4], trans)
    return np.concatenate([np.minimum(p1, p2), np.maximum(p1, p2)], axis=1)


def flip_boxes_horizontal(boxes: np.ndarray, width: int) -> np.ndarray:
    """Mirror boxes ``[N, 4]`` in an image of ``width`` pixels, as the official ``width - x - 1``."""
    b = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    b[:, [0, 2]] = width - b[:, [2, 0]] - 1
    return b


# Official COCO statistics, for images in OpenCV's BGR channel order (the convention everywhere in
# this project, so that official checkpoints see the inputs they were trained on).
COCO_MEAN_BGR = np.array([0.40789654, 0.44719302, 0.47026115], dtype=np.float32)
COCO_STD_BGR = np.array([0.28863828, 0.27408164, 0.27809835], dtype=np.float32)


def normalize_image(image_bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR ``[H, W, 3]`` -> float32 ``[3, H, W]``, scaled to [0, 1] and standardised."""
    img = image_bgr.astype(np.float32) / 255.0
    img = (img - COCO_MEAN_BGR) / COCO_STD_BGR
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def normalize_batch(images: "torch.Tensor", memory_format: "torch.memory_format | None" = None) -> "torch.Tensor":
    """uint8 BGR ``[B, 3, H, W]`` (any strides) -> float32 normalised ``[B, 3, H, W]``, on the
    tensor's device, in ``memory_format`` (default contiguous; ``torch.channels_last`` for a
    channels-last model).

    Lets a loader ship 4x smaller uint8 batches and normalise on the accelerator; a float input is
    returned unchanged (already normalised by :func:`normalize_image`).
    """
    import torch

    if images.dtype != torch.uint8:
        return images
    mean = torch.as_tensor(COCO_MEAN_BGR * 255.0, device=images.device).view(1, 3, 1, 1)
    std = torch.as_tensor(COCO_STD_BGR * 255.0, device=images.device).view(1, 3, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device,
                      memory_format=memory_format or torch.contiguous_format)
    return torch.sub(images, mean, out=out).div_(std)
