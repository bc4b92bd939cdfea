"""Multi-scale testing: soft-NMS with the official semantics, the per-class merge, scale geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from centernet.decode import boxes_to_original
from centernet.inference import predict
from centernet.models import build_model
from centernet.multiscale import (
    merge_detections,
    predict_multiscale,
    scaled_input_size,
    soft_nms,
    to_base_output_pixels,
)

A = [0, 0, 9, 9, 0.9]  # 10 x 10 px with the official +1 convention
B = [0, 0, 9, 4, 0.8]  # its top half: intersection 50, union 100 -> IoU 0.5


def test_gaussian_soft_nms_decays_by_exp_minus_iou_squared_over_sigma():
    out = soft_nms(np.array([B, A]), method="gaussian", sigma=0.5)
    np.testing.assert_allclose(out[:, 4], [0.9, 0.8 * math.exp(-0.25 / 0.5)])  # selected first: A
    np.testing.assert_array_equal(out[0, :4], A[:4])


def test_linear_and_hard_soft_nms():
    linear = soft_nms(np.array([A, B]), method="linear", iou_threshold=0.3)
    np.testing.assert_allclose(linear[:, 4], [0.9, 0.8 * (1 - 0.5)])
    hard = soft_nms(np.array([A, B]), method="hard", iou_threshold=0.3)
    assert hard.shape == (1, 5)  # B's score becomes 0 < 0.001: dropped
    assert soft_nms(np.array([A, B]), method="hard", iou_threshold=0.6).shape == (2, 5)  # IoU 0.5 <= 0.6


def test_soft_nms_drops_only_overlapping_boxes_below_the_threshold():
    twin = [0, 0, 9, 9, 0.0015]  # IoU 1 with A: 0.0015 * exp(-2) = 0.0002 < 0.001 -> dropped
    far = [100, 100, 110, 110, 0.0005]  # below the threshold but overlaps nothing: kept (official)
    out = soft_nms(np.array([twin, far, A]), method="gaussian")
    assert [tuple(r[:4]) for r in out] == [tuple(A[:4]), tuple(far[:4])]
    assert out[1, 4] == pytest.approx(0.0005)
    with pytest.raises(ValueError, match="method"):
        soft_nms(np.array([A]), method="soft")


def test_merge_detections_soft_nms_per_class_then_top_k_with_ties():
    s1 = np.array([[0, 0, 9, 9, 0.9, 0], [50, 50, 59, 59, 0.7, 1]])
    s2 = np.array([[0, 0, 9, 9, 0.6, 0], [0, 0, 9, 9, 0.5, 1]])  # same box, class 1: not suppressed by class 0
    merged = merge_detections([s1, s2], nms=True)
    np.testing.assert_allclose(merged[:, 4], [0.9, 0.7, 0.5, 0.6 * math.exp(-1 / 0.5)])
    np.testing.assert_array_equal(merged[:, 5], [0, 1, 1, 0])
    plain = merge_detections([s1, s2], nms=False)
    np.testing.assert_allclose(plain[:, 4], [0.9, 0.7, 0.6, 0.5])
    ties = np.array([[0, 0, 1, 1, s, 0] for s in (0.5, 0.4, 0.4, 0.1)])
    assert len(merge_detections([ties], nms=False, max_per_image=2)) == 3  # the official cut keeps ties


def test_scaled_input_size_rounds_up_to_multiples_of_32():
    assert scaled_input_size((512, 512), 0.5) == (256, 256)
    assert scaled_input_size((512, 384), 1.25) == (640, 480)
    assert scaled_input_size((64, 64), 0.75) == (64, 64)  # 48 -> 64
    assert scaled_input_size((64, 64), 1.25) == (96, 96)  # 80 -> 96
    with pytest.raises(ValueError, match="scales"):
        scaled_input_size((64, 64), 0)


def test_to_base_output_pixels_inverts_the_half_pixel_resize():
    # base 64 -> scaled 32 (ratio 2): output px 4 = input px 16 -> (16 + 0.5) * 2 - 0.5 = 32.5 -> 8.125
    dets = np.array([[4.0, 4.0, 6.0, 8.0, 0.9, 2.0]])
    out = to_base_output_pixels(dets, (32, 32), (64, 64))
    np.testing.assert_allclose(out[0], [8.125, 8.125, 12.125, 16.125, 0.9, 2.0])
    np.testing.assert_allclose(to_base_output_pixels(dets, (64, 64), (64, 64)), dets)


def test_single_scale_equals_plain_predict():
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    affines = np.array([[[2.0, 0, 3], [0, 2.0, 1]], [[1.5, 0, 0], [0, 1.5, 7]]])
    got = predict_multiscale(model, images, affines, (1.0,), image_sizes=[(60, 70), None])
    dets = predict(model, images).numpy()
    for i, hw in enumerate([(60, 70), None]):
        want = boxes_to_original(dets[i], affines[i], hw)
        np.testing.assert_allclose(got[i], want[np.argsort(-want[:, 4], kind="stable")])
    for d in predict_multiscale(model, images, affines, (0.5, 1.0)):
        assert (np.diff(d[:, 4]) <= 0).all()  # by score
        assert len(d) <= 100 or (d[99:, 4] == d[99, 4]).all()  # beyond 100 only ties (zero-score non-peaks)
