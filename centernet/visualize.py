"""Pictures of detections: boxes drawn on images, tiled into one grid image."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_PALETTE = np.array(
    [[60, 180, 75], [230, 50, 50], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190]], dtype=np.uint8)


def class_color(index: int) -> tuple[int, int, int]:
    """A stable BGR colour per class index."""
    c = _PALETTE[int(index) % len(_PALETTE)]
    return int(c[2]), int(c[1]), int(c[0])


def draw_detections(
    image_bgr: np.ndarray,
    dets: np.ndarray,
    names: Sequence[str],
    *,
    score_threshold: float = 0.3,
    gt_boxes: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``image_bgr`` with detections ``[K, 6]`` (original pixels) and thin white truth boxes."""
    out = image_bgr.copy()
    if gt_boxes is not None:
        for x1, y1, x2, y2 in np.asarray(gt_boxes).reshape(-1, 4):
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), (255, 255, 255), 1)
    for x1, y1, x2, y2, score, cls in np.asarray(dets).reshape(-1, 6):
        if score < score_threshold:
            continue
        color = class_color(int(cls))
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), color, 2)
        label = f"{names[int(cls)]} {score:.2f}"
        cv2.putText(out, label, (int(x1), max(10, int(y1) - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1,
                    cv2.LINE_AA)
    return out


def tile_images(images: Sequence[np.ndarray], columns: int = 4, cell: int = 256) -> np.ndarray:
    """Letterbox each image into a ``cell``-sized square and tile them into one BGR grid."""
    if not images:
        raise ValueError("no images to tile")
    rows = (len(images) + columns - 1) // columns
    grid = np.full((rows * cell, columns * cell, 3), 32, np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        s = cell / max(h, w)
        small = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, columns)
        grid[r * cell : r * cell + small.shape[0], c * cell : c * cell + small.shape[1]] = small
    return grid
