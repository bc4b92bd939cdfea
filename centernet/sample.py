"""One training or evaluation sample made the official ``ctdet`` way, in process (no precompute).

Used by the in-process dataset (demo, tests, plain-PyTorch runs); ``pipeline/`` precomputes the
same targets into shards for distributed training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from centernet.targets import encode
from centernet.transforms import (
    flip_boxes_horizontal,
    get_affine_transform,
    letterbox_params,
    normalize_image,
    transform_boxes,
    warp_image,
)


@dataclass(frozen=True)
class SampleConfig:
    """How samples are made: input size (H, W), output stride, encoding and augmentation settings."""

    input_size: tuple[int, int] = (512, 512)
    down_ratio: int = 4
    max_objs: int = 128
    min_overlap: float = 0.7
    radius_variant: str = "official"
    scale_range: tuple[float, float] = (0.6, 1.4)
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive multiples of 32, got {self.input_size!r}")

    @property
    def output_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.down_ratio, self.input_size[1] // self.down_ratio


def _border(border: int, size: int) -> int:
    """The official ``_get_border``: largest border/2^i that leaves room for the random center."""
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


def make_sample(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    config: SampleConfig,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Letterbox (and, with ``rng``, randomly scale/shift/flip) an image and encode its targets.

    Args:
        image_bgr: ``[H0, W0, 3]`` uint8.
        boxes: ``[N, 4]`` x1 y1 x2 y2 in original pixels; classes ``[N]`` contiguous indices.
        rng: random generator for training augmentation; ``None`` gives the deterministic
            test-time letterbox.

    Returns the targets of :func:`centernet.targets.encode` plus "image" float32 ``[3, H, W]``
    (normalised) and "affine" float32 ``[2, 3]`` mapping output-map pixels to original pixels.
    """
    h0, w0 = image_bgr.shape[:2]
    center, scale = letterbox_params((h0, w0), config.input_size)
    flipped = False
    if rng is not None:
        scale *= float(rng.choice(np.arange(config.scale_range[0], config.scale_range[1], 0.1)))
        wb, hb = _border(128, w0), _border(128, h0)
        center[0] = rng.integers(low=wb, high=max(wb + 1, w0 - wb))
        center[1] = rng.integers(low=hb, high=max(hb + 1, h0 - hb))
        if rng.random() < config.flip_prob:
            flipped = True
            image_bgr = image_bgr[:, ::-1, :]
            center[0] = w0 - center[0] - 1
            boxes = flip_boxes_horizontal(boxes, w0)
    in_h, in_w = config.input_size
    out_h, out_w = config.output_size
    trans_in = get_affine_transform(center, scale, 0, (in_w, in_h))
    trans_out = get_affine_transform(center, scale, 0, (out_w, out_h))
    image = warp_image(np.ascontiguousarray(image_bgr), trans_in, (in_w, in_h))
    out_boxes = transform_boxes(boxes, trans_out).astype(np.float32)
    targets = encode(out_boxes, classes, num_classes, (out_h, out_w), max_objs=config.max_objs,
                     min_overlap=config.min_overlap, radius_variant=config.radius_variant)
    inverse = get_affine_transform(center, scale, 0, (out_w, out_h), inv=True)  # [2, 3]
    if flipped:  # x_original = W0 - 1 - x_flipped
        inverse = np.array([[-1, 0, w0 - 1], [0, 1, 0]], dtype=np.float64) @ np.vstack([inverse, [0, 0, 1]])
    return {**targets, "image": normalize_image(image), "affine": inverse.astype(np.float32)}
