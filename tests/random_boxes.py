"""Random COCO-like boxes in output-map pixels, for tests and benchmarks (not from the official code)."""

from __future__ import annotations

import numpy as np


def random_coco_like_boxes(
    rng: np.random.Generator, n: int, output_size: tuple[int, int] = (128, 128), num_classes: int = 80
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` boxes ``[n, 4]`` float32 (x1 y1 x2 y2) and classes ``[n]`` int64.

    Sides log-uniform in 1..100 output pixels, centers uniform over the map and 4 pixels beyond it
    (so some boxes are partly outside), classes uniform in ``0..num_classes-1``.
    """
    h, w = output_size
    sizes = np.exp(rng.uniform(np.log(1.0), np.log(100.0), size=(n, 2)))
    centers = rng.uniform(-4, [w + 4, h + 4], size=(n, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).astype(np.float32)
    classes = rng.integers(0, num_classes, size=n)
    return boxes, classes
