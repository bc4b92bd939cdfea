"""Gaussian target encoding for CenterNet (the official ``ctdet`` encoding, vectorised).

Everything here works in *output-map* pixels (input pixels / output stride).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RADIUS_VARIANTS = ("official", "corrected")


def gaussian_radius(
    height: float, width: float, min_overlap: float = 0.7, variant: str = "official"
) -> float:
    """Radius of the disc of center positions whose box keeps IoU >= ``min_overlap`` with the truth.

    The minimum over the three cases of CornerNet (both corners inside, both outside, one of each).

    ``variant="official"`` reproduces the formula of the official CenterNet/CornerNet code
    (``gaussian_radius`` of ``src/lib/utils/image.py``, bit for bit), which takes the ``+sqrt`` root in
    the first two cases and divides by 2 instead of ``2a`` in the last two; the published models were
    trained with it. At IoU 0.7 its radii are 3.3-4x the exact ones. ``variant="corrected"`` is the
    exact solution of the three quadratics (as mmdetection uses).
    """
    if variant not in RADIUS_VARIANTS:
        raise ValueError(f"variant must be one of {RADIUS_VARIANTS}, got {variant!r}")
    if not 0.0 < min_overlap < 1.0:
        raise ValueError(f"min_overlap must be in (0, 1), got {min_overlap!r}")
    r1, r2, r3 = _radius_cases(np.float64(height), np.float64(width), min_overlap, variant)
    return float(min(r1, r2, r3))


def _radius_cases(height, width, min_overlap: float, variant: str):
    """The three case radii; works element-wise on numpy arrays (float64)."""
    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    sq1 = np.sqrt(b1**2 - 4 * a1 * c1)

    a2 = 4.0
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    sq2 = np.sqrt(b2**2 - 4 * a2 * c2)

    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    sq3 = np.sqrt(b3**2 - 4 * a3 * c3)

    if variant == "official":
        return (b1 + sq1) / 2, (b2 + sq2) / 2, (b3 + sq3) / 2
    return (b1 - sq1) / (2 * a1), (b2 - sq2) / (2 * a2), (b3 + sq3) / (2 * a3)


def gaussian_radii(
    heights: np.ndarray, widths: np.ndarray, min_overlap: float = 0.7, variant: str = "official"
) -> np.ndarray:
    """Vectorised :func:`gaussian_radius`: ``[N]`` heights and widths -> ``[N]`` float64 radii."""
    if variant not in RADIUS_VARIANTS:
        raise ValueError(f"variant must be one of {RADIUS_VARIANTS}, got {variant!r}")
    h = np.asarray(heights, dtype=np.float64)
    w = np.asarray(widths, dtype=np.float64)
    r1, r2, r3 = _radius_cases(h, w, min_overlap, variant)
    return np.minimum(np.minimum(r1, r2), r3)


@lru_cache(maxsize=512)
def gaussian_kernel(radius: int) -> np.ndarray:
    """``[2r+1, 2r+1]`` float64 Gaussian with sigma = (2r+1)/6 and peak exactly 1 (official ``gaussian2D``).

    Cached and read-only: callers must not modify it.
    """
    diameter = 2 * radius + 1
    sigma = diameter / 6
    m = (diameter - 1.0) / 2.0
    y, x = np.ogrid[-m : m + 1, -m : m + 1]
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(kernel.dtype).eps * kernel.max()] = 0
    kernel.setflags(write=False)
    return kernel


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """Element-wise max of a Gaussian of ``radius`` into ``heatmap`` ``[H, W]`` around ``center`` (x, y).

    Modifies ``heatmap`` in place and returns it (the official ``draw_umich_gaussian``, bit for bit).
    A center outside the map draws the part of the Gaussian that falls inside it.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    kernel = gaussian_kernel(int(radius))
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:  # wholly outside the map
        return heatmap
    region = heatmap[y - top : y + bottom, x - left : x + right]
    patch = kernel[radius - top : radius + bottom, radius - left : radius + right]
    if min(patch.shape) > 0 and min(region.shape) > 0:
        np.maximum(region, patch, out=region)
    return heatmap


@dataclass(frozen=True)
class EncodeStats:
    """What :func:`encode` could not represent, for reporting.

    ``truncated``: objects beyond ``max_objs`` (dropped). ``degenerate``: boxes with no area after
    clipping to the map (no target). ``collisions``: objects whose center pixel is already taken by
    an earlier object of the same class (their ``wh``/``reg`` targets are trained on one pixel, the
    paper's stated drawback). ``radii``: ``[M]`` int radii of the drawn objects.
    """

    truncated: int
    degenerate: int
    collisions: int
    radii: np.ndarray


@dataclass(frozen=True)
class _EncodedObjects:
    """The per-object part of the encoding (everything but the heatmap)."""

    wh: np.ndarray  # [K, 2] float32
    reg: np.ndarray  # [K, 2] float32
    ind: np.ndarray  # [K] int64
    mask: np.ndarray  # [K] uint8
    classes: np.ndarray  # [M] int64, the drawn objects (in slot order)
    centers: np.ndarray  # [M, 2] int32 (x, y)
    radii: np.ndarray  # [M] int64
    truncated: int
    degenerate: int

    def stats(self, out_h: int, out_w: int) -> EncodeStats:
        keys = self.classes * (out_h * out_w) + self.ind[self.mask.astype(bool)]
        return EncodeStats(truncated=self.truncated, degenerate=self.degenerate,
                           collisions=int(len(keys) - len(np.unique(keys))), radii=self.radii)


def _encode_objects(
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    output_size: tuple[int, int],
    max_objs: int,
    min_overlap: float,
    radius_variant: str,
) -> _EncodedObjects:
    out_h, out_w = int(output_size[0]), int(output_size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output_size must be positive (H, W), got {output_size!r}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"boxes has {len(boxes)} rows but classes has {len(classes)}")
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"classes must lie in 0..{num_classes - 1}, got values {classes.min()}..{classes.max()}"
        )
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    reg = np.zeros((max_objs, 2), dtype=np.float32)
    ind = np.zeros((max_objs,), dtype=np.int64)
    mask = np.zeros((max_objs,), dtype=np.uint8)

    n = min(len(boxes), max_objs)
    b = boxes[:n].copy()  # [n, 4] float32, as the official per-object float32 bbox
    cls = classes[:n].astype(np.int64)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, out_w - 1)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, out_h - 1)
    h = b[:, 3] - b[:, 1]  # [n] float32
    w = b[:, 2] - b[:, 0]
    slots = np.flatnonzero((h > 0) & (w > 0))  # [M]; NaN boxes compare False and are skipped too

    radii = gaussian_radii(np.ceil(h[slots]), np.ceil(w[slots]), min_overlap, radius_variant)
    radii = np.maximum(0, radii.astype(np.int64))  # int() truncates toward zero, as official
    ct = np.stack([(b[slots, 0] + b[slots, 2]) / 2, (b[slots, 1] + b[slots, 3]) / 2], axis=1)
    ct_int = ct.astype(np.int32)  # [M, 2] (x, y)

    wh[slots, 0] = w[slots]
    wh[slots, 1] = h[slots]
    ind[slots] = ct_int[:, 1].astype(np.int64) * out_w + ct_int[:, 0]
    reg[slots] = ct - ct_int
    mask[slots] = 1
    return _EncodedObjects(wh, reg, ind, mask, cls[slots], ct_int, radii,
                           truncated=len(boxes) - n, degenerate=int(n - len(slots)))


def encode(
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    output_size: tuple[int, int],
    max_objs: int = 128,
    min_overlap: float = 0.7,
    radius_variant: str = "official",
    return_stats: bool = False,
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], EncodeStats]:
    """Encode boxes as CenterNet training targets, exactly as the official ``ctdet`` dataset does.

    Bit-identical to the target loop of the official ``CTDetDataset.__getitem__`` on the same boxes
    after its affine (checked against its outputs in the tests), vectorised except for the drawing.

    Args:
        boxes: ``[N, 4]`` x1 y1 x2 y2 in output-map pixels.
        classes: ``[N]`` contiguous class indices in ``0..num_classes-1``.
        num_classes: C.
        output_size: (H, W) of the output map.
        max_objs: K, slots for ``wh``/``reg``/``ind``/``mask``; object k uses slot k, objects
            beyond K are dropped (counted in the stats).
        return_stats: also return an :class:`EncodeStats`.

    Returns:
        ``"hm"`` ``[C, H, W]`` float32, ``"wh"`` ``[K, 2]`` float32 (w, h), ``"reg"`` ``[K, 2]`` float32
        (center - int(center)), ``"ind"`` ``[K]`` int64 (y * W + x), ``"mask"`` ``[K]`` uint8.
    """
    objs = _encode_objects(boxes, classes, num_classes, output_size, max_objs, min_overlap, radius_variant)
    out_h, out_w = int(output_size[0]), int(output_size[1])
    hm = np.zeros((num_classes, out_h, out_w), dtype=np.float32)
    for c, (x, y), r in zip(objs.classes, objs.centers, objs.radii):
        draw_gaussian(hm[c], (int(x), int(y)), int(r))
    targets = {"hm": hm, "wh": objs.wh, "reg": objs.reg, "ind": objs.ind, "mask": objs.mask}
    return (targets, objs.stats(out_h, out_w)) if return_stats else targets


def encode_sparse(
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
    output_size: tuple[int, int],
    max_objs: int = 128,
    min_overlap: float = 0.7,
    radius_variant: str = "official",
    return_stats: bool = False,
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], EncodeStats]:
    """:func:`encode` with the heatmap as its nonzero pixels, never allocating the dense ``[C, H, W]``.

    Returns ``"hm_index"`` ``[P]`` int64 (flat C-order index into ``[C, H, W]``, ascending) and
    ``"hm_value"`` ``[P]`` float32 in place of ``"hm"``; :func:`render_heatmap` gives back exactly the
    dense map of :func:`encode`. The rest is identical.
    """
    objs = _encode_objects(boxes, classes, num_classes, output_size, max_objs, min_overlap, radius_variant)
    out_h, out_w = int(output_size[0]), int(output_size[1])
    indices, values = [], []
    for c, (x, y), r in zip(objs.classes, objs.centers, objs.radii):
        r = int(r)
        x, y = int(x), int(y)
        left, right = min(x, r), min(out_w - x, r + 1)
        top, bottom = min(y, r), min(out_h - y, r + 1)
        patch = gaussian_kernel(r)[r - top : r + bottom, r - left : r + right]  # [h, w]
        rows = np.arange(y - top, y + bottom) + int(c) * out_h  # [h]
        cols = np.arange(x - left, x + right)  # [w]
        indices.append((rows[:, None] * out_w + cols[None, :]).ravel())
        values.append(patch.astype(np.float32).ravel())
    if indices:
        idx = np.concatenate(indices)
        val = np.concatenate(values)
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        idx, val = idx[starts], np.maximum.reduceat(val, starts)  # element-wise max per pixel
        keep = val > 0
        idx, val = idx[keep], val[keep]
    else:
        idx, val = np.zeros(0, np.int64), np.zeros(0, np.float32)
    targets = {"hm_index": idx.astype(np.int64), "hm_value": val.astype(np.float32), "wh": objs.wh,
               "reg": objs.reg, "ind": objs.ind, "mask": objs.mask}
    return (targets, objs.stats(out_h, out_w)) if return_stats else targets


def render_heatmap(
    hm_index: np.ndarray, hm_value: np.ndarray, num_classes: int, output_size: tuple[int, int]
) -> np.ndarray:
    """Dense ``[C, H, W]`` float32 heatmap from its sparse form (flat C-order index, value)."""
    hm = np.zeros(num_classes * int(output_size[0]) * int(output_size[1]), dtype=np.float32)
    hm[np.asarray(hm_index, dtype=np.int64)] = hm_value
    return hm.reshape(num_classes, int(output_size[0]), int(output_size[1]))
