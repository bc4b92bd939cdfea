"""One training or evaluation sample made the official ``ctdet`` way, in process (no precompute).

Used by the in-process dataset (demo, tests, plain-PyTorch runs); ``pipeline/`` precomputes the
same targets into shards for distributed training. A sample has the form the shard reader yields
(uint8 image, sparse heatmap; see :mod:`centernet.batch`): the dense heatmap and the colour
augmentation are made on the training device, by the same code for both paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from centernet.config_fields import setting
from centernet.targets import RADIUS_VARIANTS, encode_sparse
from centernet.transforms import (
    check_input_size,
    flip_boxes_horizontal,
    get_affine_transform,
    letterbox_params,
    transform_boxes,
    warp_image,
)


@dataclass(frozen=True)
class SampleConfig:
    """How samples are made: input size (H, W), output stride, encoding and geometric augmentation.

    Declared once (``centernet.config_fields``): ``centernet precompute``'s options and the
    pipeline config's keys come from these fields. ``input_size`` may be given as one side (square).
    """

    input_size: tuple[int, ...] = setting((512, 512), default_text="512", help="Network input size: one side (square) or H,W; "
                                                           "multiples of 32. Output maps are input / 4.",
                                          metavar="S")
    down_ratio: int = setting(4, help="Output stride of the heads.", cli=False)
    max_objs: int = setting(128, help="Object slots per sample (official 128).")
    min_overlap: float = setting(0.7, help="IoU the Gaussian radius guarantees (official 0.7).")
    radius_variant: str = setting("official", help="Gaussian radius formula: the official one (its quirk kept, "
                                                   "as the published models) or the exact solution.",
                                  choices=RADIUS_VARIANTS)
    scale_range: tuple[float, ...] = setting((0.6, 1.4), help="Random scale range of the training augmentation.",
                                             metavar="LOW,HIGH")
    flip_prob: float = setting(0.5, help="Horizontal flip probability of the training augmentation.")

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            size = (int(size), int(size))
        elif isinstance(size, (tuple, list)) and len(size) == 1:
            size = (int(size[0]), int(size[0]))
        check_input_size(size)
        object.__setattr__(self, "input_size", tuple(int(v) for v in size))
        lo, hi = (tuple(self.scale_range) + (None, None))[:2]
        if lo is None or hi is None or len(self.scale_range) != 2 or not 0 < lo < hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low < high, got {self.scale_range!r}")
        object.__setattr__(self, "scale_range", (float(lo), float(hi)))
        if self.down_ratio <= 0 or any(v % self.down_ratio for v in self.input_size):
            raise ValueError(f"down_ratio {self.down_ratio!r} must divide input_size {self.input_size}")
        if self.radius_variant not in RADIUS_VARIANTS:
            raise ValueError(f"radius_variant must be one of {RADIUS_VARIANTS}, got {self.radius_variant!r}")
        if not 0.0 < self.min_overlap < 1.0:
            raise ValueError(f"min_overlap must be in (0, 1), got {self.min_overlap!r}")
        if self.max_objs < 1:
            raise ValueError(f"max_objs must be >= 1, got {self.max_objs!r}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}")

    @property
    def output_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.down_ratio, self.input_size[1] // self.down_ratio


def _border(border: int, size: int) -> int:
    """The official ``_get_border``: largest border/2^i that leaves room for the random center."""
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


def letterbox_view(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    input_size: tuple[int, int],
    down_ratio: int = 4,
    rng: np.random.Generator | None = None,
    scale_range: tuple[float, float] = (0.6, 1.4),
    flip_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One letterboxed view of an image, randomly scaled/shifted/flipped when ``rng`` is given.

    The official ``ctdet`` geometry: scale drawn from ``arange(lo, hi, 0.1)``, a random center
    (shift/crop) inside the official border, horizontal flip; all through the official affine, so
    boxes and the back-mapping stay exact.

    Args:
        image_bgr: ``[H0, W0, 3]`` uint8. boxes: ``[N, 4]`` x1 y1 x2 y2 original pixels.
        input_size: (H, W) of the network input.

    Returns:
        image ``[H, W, 3]`` uint8 at the input size, boxes ``[N, 4]`` float32 in output-map pixels
        (unclipped, as :func:`centernet.targets.encode` takes them), and a ``[2, 3]`` float64 affine
        mapping output-map pixels back to original pixels.
    """
    h0, w0 = image_bgr.shape[:2]
    center, scale = letterbox_params((h0, w0), input_size)
    flipped = False
    if rng is not None:
        scale *= float(rng.choice(np.arange(scale_range[0], scale_range[1], 0.1)))
        wb, hb = _border(128, w0), _border(128, h0)
        center[0] = rng.integers(low=wb, high=max(wb + 1, w0 - wb))
        center[1] = rng.integers(low=hb, high=max(hb + 1, h0 - hb))
        if rng.random() < flip_prob:
            flipped = True
            image_bgr = cv2.flip(image_bgr, 1)  # horizontal mirror
            center[0] = w0 - center[0] - 1
            boxes = flip_boxes_horizontal(boxes, w0)
    in_h, in_w = input_size
    out_h, out_w = in_h // down_ratio, in_w // down_ratio
    trans_in = get_affine_transform(center, scale, 0, (in_w, in_h))
    trans_out = get_affine_transform(center, scale, 0, (out_w, out_h))
    image = warp_image(image_bgr, trans_in, (in_w, in_h))
    out_boxes = transform_boxes(boxes, trans_out).astype(np.float32)  # [N, 4]
    back = get_affine_transform(center, scale, 0, (out_w, out_h), inv=True)  # [2, 3]
    if flipped:  # x_original = W0 - 1 - x_flipped
        back = np.array([[-1, 0, w0 - 1], [0, 1, 0]], dtype=np.float64) @ np.vstack([back, [0, 0, 1]])
    return image, out_boxes, np.asarray(back, dtype=np.float64)


def make_sample(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    config: SampleConfig,
    rng: np.random.Generator | None = None,
) -> dict[str, object]:
    """Letterbox (and, with ``rng``, randomly scale/shift/flip) an image and encode its targets.

    Args:
        image_bgr: ``[H0, W0, 3]`` uint8.
        boxes: ``[N, 4]`` x1 y1 x2 y2 in original pixels; classes ``[N]`` contiguous indices.
        rng: random generator for training augmentation; ``None`` gives the deterministic
            test-time letterbox.

    Returns the targets of :func:`centernet.targets.encode_sparse` ("hm_index" ``[P]`` int64,
    "hm_value" ``[P]`` float32, "wh", "reg", "ind", "mask") plus "hm_shape" (C, H/4, W/4), "image"
    uint8 ``[3, H, W]`` BGR (a channels-last view of the ``[H, W, 3]`` pixels; normalised on the
    device) and "affine" float32 ``[2, 3]`` mapping output-map pixels to original pixels.
    :func:`centernet.heatmap.dense_heatmap` gives the dense heatmap of :func:`centernet.targets.encode`.
    """
    image, out_boxes, back = letterbox_view(image_bgr, boxes, config.input_size, config.down_ratio, rng,
                                            config.scale_range, config.flip_prob)
    targets = encode_sparse(out_boxes, classes, num_classes, config.output_size, max_objs=config.max_objs,
                            min_overlap=config.min_overlap, radius_variant=config.radius_variant)
    return {**targets, "hm_shape": (int(num_classes), *config.output_size),
            "image": image.transpose(2, 0, 1), "affine": back.astype(np.float32)}
