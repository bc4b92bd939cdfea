"""Small COCO-format datasets of simple shapes, for the demo and the tests.

Each image has a textured background and a few filled shapes (one class per shape kind) of varied
size and colour; boxes are the tight extents of the drawn pixels, so they are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SHAPES = ("square", "circle", "triangle", "cross")


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lies."""

    images_dir: Path
    annotations: Path
    num_images: int
    num_annotations: int


def _draw_shape(mask: np.ndarray, kind: str, cx: int, cy: int, size: int, rng: np.random.Generator) -> None:
    half = size // 2
    if kind == "square":
        aspect = rng.uniform(0.6, 1.6)
        hw, hh = max(2, int(half * aspect)), max(2, int(half / aspect))
        cv2.rectangle(mask, (cx - hw, cy - hh), (cx + hw, cy + hh), 255, thickness=-1)
    elif kind == "circle":
        cv2.circle(mask, (cx, cy), max(2, half), 255, thickness=-1)
    elif kind == "triangle":
        pts = np.array([[cx, cy - half], [cx - half, cy + half], [cx + half, cy + half]], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    elif kind == "cross":
        t = max(2, size // 6)
        cv2.rectangle(mask, (cx - half, cy - t), (cx + half, cy + t), 255, thickness=-1)
        cv2.rectangle(mask, (cx - t, cy - half), (cx + t, cy + half), 255, thickness=-1)
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {SHAPES}")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_objects: int,
    num_classes: int,
    size_range: tuple[int, int],
) -> tuple[np.ndarray, list[tuple[list[float], int]]]:
    """One BGR uint8 image ``[H, W, 3]`` and its objects as (xyxy box, class index) pairs."""
    base = rng.integers(40, 200, size=3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = base
    noise = rng.normal(0, 12, size=(height // 8 + 1, width // 8 + 1, 3))
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    objects: list[tuple[list[float], int]] = []
    for _ in range(num_objects * 10):
        if len(objects) == num_objects:
            break
        cls = int(rng.integers(num_classes))
        size = int(rng.integers(size_range[0], size_range[1] + 1))
        cx = int(rng.integers(size // 2, max(size // 2 + 1, width - size // 2)))
        cy = int(rng.integers(size // 2, max(size // 2 + 1, height - size // 2)))
        mask = np.zeros((height, width), np.uint8)
        _draw_shape(mask, SHAPES[cls % len(SHAPES)], cx, cy, size, rng)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        if any(_iou(np.array(box), np.array(b)) > 0.0 for b, _ in objects):
            continue
        color = rng.integers(0, 256, size=3)
        while np.abs(color.astype(int) - base).sum() < 150:
            color = rng.integers(0, 256, size=3)
        image[mask > 0] = color
        objects.append((box, cls))
    return image, objects


def make_synthetic_coco(
    root: str | Path,
    num_images: int,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (192, 256),
    objects_per_image: tuple[int, int] = (1, 6),
    object_size: tuple[int, int] = (14, 72),
    category_ids: tuple[int, ...] = (1, 2, 3),
    image_format: str = "jpg",
) -> SyntheticDataset:
    """Write ``root/images/*.{jpg,png}`` and ``root/annotations.json`` (COCO format).

    Image sides are drawn uniformly from ``image_size`` (min, max), so images vary in shape.
    Class k is shape ``SHAPES[k]`` and has the dataset category id ``category_ids[k]``.
    """
    if not 1 <= len(category_ids) <= len(SHAPES):
        raise ValueError(f"category_ids must name 1..{len(SHAPES)} classes, got {category_ids!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        h = int(rng.integers(image_size[0], image_size[1] + 1))
        w = int(rng.integers(image_size[0], image_size[1] + 1))
        n = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        image, objects = render_image(rng, h, w, n, len(category_ids), object_size)
        name = f"{image_id:06d}.{image_format}"
        cv2.imwrite(str(images_dir / name), image)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for (x1, y1, x2, y2), cls in objects:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(category_ids[cls]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            })
    categories = [{"id": int(cid), "name": SHAPES[k], "supercategory": "shape"}
                  for k, cid in enumerate(category_ids)]
    ann_path = root / "annotations.json"
    tmp = ann_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    tmp.replace(ann_path)
    return SyntheticDataset(images_dir, ann_path, len(images), len(annotations))
