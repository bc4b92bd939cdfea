"""Gaussian radius, drawing and the ctdet encoding, against hand-checked numbers.

Parity with the official code itself is tested on its own outputs in ``test_official_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from random_boxes import random_coco_like_boxes

from centernet.targets import draw_gaussian, encode, gaussian_kernel, gaussian_radius

HAND_CHECKED = {  # (height, width): (official, corrected) at IoU 0.7
    (10, 10): (2.7332, 0.8167),
    (50, 50): (13.6660, 4.0835),
    (100, 100): (27.3320, 8.1670),
    (20, 40): (7.3559, 2.1548),
}


@pytest.mark.parametrize("size", list(HAND_CHECKED))
def test_gaussian_radius_hand_checked(size):
    official, corrected = HAND_CHECKED[size]
    assert gaussian_radius(*size) == pytest.approx(official, abs=5e-5)
    assert gaussian_radius(*size, variant="official") == pytest.approx(official, abs=5e-5)
    assert gaussian_radius(*size, variant="corrected") == pytest.approx(corrected, abs=5e-5)


@pytest.mark.parametrize("size", [(50, 80), (7, 300), (128, 3), (33.5, 33.5)])
@pytest.mark.parametrize("min_overlap", [0.3, 0.7, 0.9])
def test_corrected_radius_is_the_exact_iou_bound(size, min_overlap):
    """A center shifted by the corrected radius keeps IoU >= min_overlap in all three CornerNet
    cases (one box shifted; shrunk by r on each side; grown by r on each side), with equality in one."""
    h, w = size
    r = gaussian_radius(h, w, min_overlap, variant="corrected")
    shifted = (h - r) * (w - r) / (2 * h * w - (h - r) * (w - r))
    shrunk = (h - 2 * r) * (w - 2 * r) / (h * w)
    grown = h * w / ((h + 2 * r) * (w + 2 * r))
    ious = np.array([shifted, shrunk, grown])
    assert np.all(ious >= min_overlap - 1e-12)
    assert np.min(np.abs(ious - min_overlap)) < 1e-12
    official = gaussian_radius(h, w, min_overlap, variant="official")
    assert official > 2 * r  # the official quirk: far larger radii (3.3-4x at IoU 0.7)


def test_gaussian_radius_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        gaussian_radius(10, 10, variant="exact")
    with pytest.raises(ValueError, match="min_overlap"):
        gaussian_radius(10, 10, min_overlap=1.5)


def test_gaussian_kernel_hand_checked():
    k = gaussian_kernel(1)  # sigma = 3/6 = 0.5 -> exp(-d^2 / 0.5)
    assert k.shape == (3, 3)
    assert k[1, 1] == 1.0
    assert k[0, 1] == pytest.approx(np.exp(-2.0))
    assert k[0, 0] == pytest.approx(np.exp(-4.0))


def test_draw_gaussian_peak_and_border():
    hm = np.zeros((8, 8), np.float32)
    draw_gaussian(hm, (0, 0), 2)  # clipped at the corner
    assert hm[0, 0] == 1.0
    assert hm[0, 1] == pytest.approx(np.exp(-1 / (2 * (5 / 6) ** 2)), rel=1e-6)
    assert hm[3:, :].max() == 0 and hm[:, 3:].max() == 0


def test_overlapping_gaussians_take_the_elementwise_max():
    # radius 2: sigma = 5/6, value exp(-d^2 * 18/25) at squared distance d^2 from the center
    g = lambda d2: np.float32(np.exp(-d2 * 18 / 25))  # noqa: E731
    a = np.zeros((5, 7), np.float32)
    draw_gaussian(a, (2, 2), 2)
    b = np.zeros((5, 7), np.float32)
    draw_gaussian(b, (3, 2), 2)
    both = a.copy()
    draw_gaussian(both, (3, 2), 2)
    expected = {  # (y, x): value; the second Gaussian is larger at (2, 3), smaller at (2, 1)
        (2, 3): np.float32(1.0), (2, 1): g(1), (2, 2): np.float32(1.0), (2, 5): g(4), (0, 0): g(8), (0, 5): g(8),
    }
    for (y, x), value in expected.items():
        assert both[y, x] == value, (y, x)
    # a sum or an overwrite would fail the checks above
    summed, overwritten = a + b, np.where(b > 0, b, a)
    assert summed[2, 3] != expected[(2, 3)] and overwritten[2, 1] != expected[(2, 1)]
    np.testing.assert_array_equal(both, np.maximum(a, b))


def test_seed_example_center_offset():
    # a ground-truth center at (211, 385) in the 512 input -> output pixel (52, 96), offset (0.75, 0.25)
    box_input = np.array([[201.0, 375.0, 221.0, 395.0]])
    t = encode(box_input / 4, np.array([0]), 1, (128, 128))
    assert t["mask"][0] == 1 and t["mask"][1:].sum() == 0
    assert t["ind"][0] == 96 * 128 + 52
    np.testing.assert_allclose(t["reg"][0], [0.75, 0.25])
    np.testing.assert_allclose(t["wh"][0], [5.0, 5.0])
    assert t["hm"][0, 96, 52] == 1.0


def test_peaks_are_exactly_one_and_only_at_centers():
    rng = np.random.default_rng(1)
    boxes, classes = random_coco_like_boxes(rng, 30, (64, 64), num_classes=5)
    t, stats = encode(boxes, classes, 5, (64, 64), return_stats=True)
    ones = np.argwhere(t["hm"] == 1.0)  # [M, 3] (c, y, x)
    centers = {(int(c), int(i) // 64, int(i) % 64) for c, i, m in zip(classes, t["ind"], t["mask"]) if m}
    assert {tuple(map(int, o)) for o in ones} == centers
    assert len(centers) == int(t["mask"].sum()) - stats.collisions
    assert t["hm"].dtype == np.float32 and t["hm"].max() <= 1.0


def test_overlapping_same_class_objects_keep_elementwise_max():
    a = np.array([[10.0, 10.0, 30.0, 30.0]])
    b = np.array([[16.0, 14.0, 40.0, 34.0]])
    both = encode(np.concatenate([a, b]), np.array([2, 2]), 3, (48, 48))["hm"]
    only_a = encode(a, np.array([2]), 3, (48, 48))["hm"]
    only_b = encode(b, np.array([2]), 3, (48, 48))["hm"]
    np.testing.assert_array_equal(both, np.maximum(only_a, only_b))
    assert both[:2].max() == 0


def test_boxes_are_clipped_to_the_map():
    t = encode(np.array([[-10.0, -6.0, 10.0, 20.0]]), np.array([0]), 1, (32, 32))
    np.testing.assert_allclose(t["wh"][0], [10.0, 20.0])  # x1 -> 0, y1 -> 0
    assert t["ind"][0] == 10 * 32 + 5
    t = encode(np.array([[20.0, 20.0, 50.0, 40.0]]), np.array([0]), 1, (32, 32))
    np.testing.assert_allclose(t["wh"][0], [11.0, 11.0])  # x2, y2 -> 31


def test_degenerate_boxes_get_no_target_and_are_counted():
    boxes = np.array([[5, 5, 5, 9], [4, 4, 8, 8], [9, 9, 3, 12], [np.nan, 1, 2, 3], [40, 40, 50, 50]], float)
    t, stats = encode(boxes, np.zeros(5, int), 1, (32, 32), return_stats=True)
    np.testing.assert_array_equal(t["mask"][:5], [0, 1, 0, 0, 0])  # the last lies wholly outside
    assert stats.degenerate == 4
    assert t["hm"].max() == 1.0 and (t["hm"] == 1.0).sum() == 1


def test_more_than_max_objs_are_truncated_and_counted():
    boxes = np.array([[i, i, i + 3.0, i + 3.0] for i in range(10)], np.float32)
    t, stats = encode(boxes, np.zeros(10, int), 1, (32, 32), max_objs=4, return_stats=True)
    assert t["mask"].shape == (4,) and t["mask"].sum() == 4
    assert stats.truncated == 6


def test_center_collisions_are_counted():
    boxes = np.array([[10, 10, 20, 20], [10.5, 10.5, 19.5, 19.5], [10, 10, 20, 20]], np.float32)
    _, stats = encode(boxes, np.array([0, 0, 1]), 2, (32, 32), return_stats=True)
    assert stats.collisions == 1  # the third has another class


def test_encode_non_square_map_and_corrected_variant_is_smaller():
    boxes = np.array([[4.0, 4.0, 30.0, 20.0]])
    off = encode(boxes, np.array([0]), 1, (24, 40))
    cor = encode(boxes, np.array([0]), 1, (24, 40), radius_variant="corrected")
    assert off["hm"].shape == (1, 24, 40)
    assert off["ind"][0] == 12 * 40 + 17
    assert (cor["hm"] > 0).sum() < (off["hm"] > 0).sum()


def test_encode_rejects_bad_classes():
    with pytest.raises(ValueError, match="classes"):
        encode(np.array([[1, 1, 4, 4]]), np.array([3]), 3, (8, 8))


@pytest.mark.parametrize("seed", range(4))
def test_encode_sparse_renders_to_exactly_the_dense_encoding(seed):
    from centernet.targets import encode_sparse, render_heatmap

    rng = np.random.default_rng(100 + seed)
    boxes, classes = random_coco_like_boxes(rng, int(rng.integers(0, 60)), (96, 128), num_classes=7)
    dense, dstats = encode(boxes, classes, 7, (96, 128), return_stats=True)
    sparse, sstats = encode_sparse(boxes, classes, 7, (96, 128), return_stats=True)
    np.testing.assert_array_equal(render_heatmap(sparse["hm_index"], sparse["hm_value"], 7, (96, 128)), dense["hm"])
    assert np.all(np.diff(sparse["hm_index"]) > 0) and np.all(sparse["hm_value"] > 0)
    assert len(sparse["hm_index"]) == np.count_nonzero(dense["hm"])
    for key in ("wh", "reg", "ind", "mask"):
        np.testing.assert_array_equal(sparse[key], dense[key])
    assert (sstats.truncated, sstats.degenerate, sstats.collisions) == \
        (dstats.truncated, dstats.degenerate, dstats.collisions)


def test_encode_sparse_empty():
    from centernet.targets import encode_sparse

    t = encode_sparse(np.zeros((0, 4)), np.zeros(0, int), 3, (8, 8))
    assert t["hm_index"].shape == (0,) and t["hm_value"].dtype == np.float32 and t["mask"].sum() == 0
