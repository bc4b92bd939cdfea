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

from centernet.sample import letterbox_view as core_letterbox_view
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


def letterbox_view(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    settings: PrecomputeSettings,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (augmented with ``rng``, else plain letterboxed) view of an image at the settings' size.

    The official geometry of :func:`centernet.sample.letterbox_view`. Returns image ``[S, S, 3]``
    uint8 BGR, boxes ``[N, 4]`` float32 in output-map pixels (unclipped, as passed to ``encode``),
    and the ``[2, 3]`` float64 affine mapping output-map pixels back to original image pixels.
    """
    size = settings.input_size
    return core_letterbox_view(image_bgr, boxes, (size, size), size // settings.output_size, rng,
                               settings.scale_range, settings.flip_prob)


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
