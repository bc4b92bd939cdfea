"""Training augmentation and letterboxing of one image view, as the official ``ctdet`` loader.

Geometry (random scale from ``arange(0.6, 1.4, 0.1)``, random center = shift/crop, horizontal
flip) goes through the official affine (:func:`centernet.transforms.get_affine_transform`), so
boxes and the output->original affine stay exact. Colour: albumentations ``ColorJitter``
(brightness/contrast/saturation 0.4, as official) and the official PCA lighting. Everything is
drawn from the ``rng`` given, so a (seed, image, view) triple always gives the same view.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from centernet.transforms import (
    flip_boxes_horizontal,
    get_affine_transform,
    letterbox_params,
    transform_boxes,
    warp_image,
)
from pipeline.schema import PrecomputeSettings

# Official PCA lighting constants (applied to BGR images in [0, 1], as the official code does).
EIG_VAL = np.array([0.2141788, 0.01817699, 0.00124462], dtype=np.float32)
EIG_VEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                    [-0.5832747, 0.00994535, -0.81221408],
                    [-0.56089297, 0.71832671, 0.41158938]], dtype=np.float32)


def view_rng(seed: int, image_id: int, view: int) -> np.random.Generator:
    """Generator for one (seed, image id, view); independent of chunking and worker."""
    words = [seed & 0xFFFFFFFF, view & 0xFFFFFFFF, image_id & 0xFFFFFFFF, (image_id >> 32) & 0xFFFFFFFF]
    return np.random.default_rng(np.random.SeedSequence(words))


def _border(border: int, size: int) -> int:
    """The official ``_get_border``: largest border/2^i leaving room for the random center."""
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


def letterbox_view(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    settings: PrecomputeSettings,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (augmented with ``rng``, else plain letterboxed) view of an image.

    Args:
        image_bgr: ``[H0, W0, 3]`` uint8. boxes: ``[N, 4]`` x1 y1 x2 y2 original pixels.

    Returns:
        image ``[S, S, 3]`` uint8 BGR at the input size, boxes ``[N, 4]`` float32 in output-map
        pixels (unclipped, as passed to ``encode``), and ``[2, 3]`` float64 affine mapping
        output-map pixels back to original image pixels.
    """
    h0, w0 = image_bgr.shape[:2]
    center, scale = letterbox_params((h0, w0))
    flipped = False
    if rng is not None:
        lo, hi = settings.scale_range
        scale *= float(rng.choice(np.arange(lo, hi, 0.1)))
        wb, hb = _border(128, w0), _border(128, h0)
        center[0] = rng.integers(low=wb, high=max(wb + 1, w0 - wb))
        center[1] = rng.integers(low=hb, high=max(hb + 1, h0 - hb))
        if rng.random() < settings.flip_prob:
            flipped = True
            image_bgr = cv2.flip(image_bgr, 1)  # horizontal mirror
            center[0] = w0 - center[0] - 1
            boxes = flip_boxes_horizontal(boxes, w0)
    size_in, size_out = settings.input_size, settings.output_size
    trans_in = get_affine_transform(center, scale, 0, (size_in, size_in))
    trans_out = get_affine_transform(center, scale, 0, (size_out, size_out))
    image = warp_image(image_bgr, trans_in, (size_in, size_in))
    out_boxes = transform_boxes(boxes, trans_out).astype(np.float32)  # [N, 4]
    back = get_affine_transform(center, scale, 0, (size_out, size_out), inv=True)  # [2, 3]
    if flipped:  # x_original = W0 - 1 - x_flipped
        back = np.array([[-1, 0, w0 - 1], [0, 1, 0]], dtype=np.float64) @ np.vstack([back, [0, 0, 1]])
    return image, out_boxes, np.asarray(back, dtype=np.float64)


class ColorAugmenter:
    """Colour jitter (albumentations) + PCA lighting on uint8 BGR images, seeded per call."""

    def __init__(self, settings: PrecomputeSettings):
        import albumentations as A  # heavy import, only where augmentation runs

        j = settings.color_jitter
        self.lighting_std = settings.lighting_std
        self.jitter: Any = None
        if j > 0:
            self.jitter = A.Compose([A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0)])

    def __call__(self, image_bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``[H, W, 3]`` uint8 BGR -> jittered ``[H, W, 3]`` uint8 BGR."""
        out = image_bgr
        if self.jitter is not None:
            self.jitter.set_random_seed(int(rng.integers(0, 2**31 - 1)))
            rgb = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)  # albumentations' saturation assumes RGB
            out = cv2.cvtColor(np.ascontiguousarray(self.jitter(image=rgb)["image"]), cv2.COLOR_RGB2BGR)
        if self.lighting_std > 0:
            alpha = rng.normal(scale=self.lighting_std, size=(3,)).astype(np.float32)
            shift = (EIG_VEC @ (EIG_VAL * alpha)) * 255.0  # [3] per BGR channel
            out = np.clip(np.rint(out.astype(np.float32) + shift), 0, 255).astype(np.uint8)
        return out
