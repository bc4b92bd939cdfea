"""Geometric training augmentation and letterboxing of one image view, as the official ``ctdet`` loader.

Geometry (random scale from ``arange(0.6, 1.4, 0.1)``, random center = shift/crop, horizontal
flip) goes through the official affine (:func:`centernet.transforms.get_affine_transform`), so
boxes and the output->original affine stay exact. Everything is drawn from the ``rng`` given, so a
(seed, image, view) triple always gives the same view. Stored views carry no colour augmentation:
the official one is applied to training batches on the device (:mod:`centernet.color`).
"""

from __future__ import annotations

import numpy as np

from centernet.sample import letterbox_view as core_letterbox_view
from pipeline.schema import PrecomputeSettings


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
                               settings.sample.scale_range, settings.sample.flip_prob)
