"""Multi-scale testing: soft-NMS with the official semantics, the per-class merge, scale geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from centernet.decode import boxes_to_original
from centernet.detect import letterbox_image
from centernet.inference import predict
from centernet.models import build_model
from centernet.targets import encode
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


class PerfectHeads(torch.nn.Module):
    """Heads a perfect detector gives for objects at ``boxes`` (base output-map px of a base input
    ``base_hw``), at whatever size the input is resized to (half-pixel centres, as F.interpolate)."""

    def __init__(self, boxes: np.ndarray, classes: np.ndarray, base_hw: tuple[int, int]):
        super().__init__()
        self.boxes, self.classes, self.base_hw = boxes, classes, base_hw

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        h, w = x.shape[2:]
        inp = self.boxes * 4  # base input px
        inp[:, [0, 2]] = (inp[:, [0, 2]] + 0.5) * (w / self.base_hw[1]) - 0.5
        inp[:, [1, 3]] = (inp[:, [1, 3]] + 0.5) * (h / self.base_hw[0]) - 0.5
        t = encode(inp / 4, self.classes, 3, (h // 4, w // 4))
        hm = torch.where(torch.from_numpy(t["hm"]) == 1, 20.0, -20.0)[None]  # [1, C, h/4, w/4]
        wh, reg = torch.zeros(1, 2, h // 4 * (w // 4)), torch.zeros(1, 2, h // 4 * (w // 4))
        m = torch.from_numpy(t["mask"]).bool()
        ind = torch.from_numpy(t["ind"])[m]
        wh[0, :, ind] = torch.from_numpy(t["wh"])[m].T
        reg[0, :, ind] = torch.from_numpy(t["reg"])[m].T
        return [{"hm": hm, "wh": wh.view(1, 2, h // 4, w // 4), "reg": reg.view(1, 2, h // 4, w // 4)}]


def test_multiscale_merge_of_perfect_heads_recovers_every_box():
    image = np.zeros((150, 200, 3), np.uint8)
    _, affine = letterbox_image(image, (64, 64))
    boxes = np.array([[2.0, 3.0, 7.5, 9.0], [9.0, 4.0, 14.0, 7.0], [3.0, 10.0, 6.0, 14.5]])  # base output px
    classes = np.array([0, 2, 1])
    model = PerfectHeads(boxes, classes, (64, 64))
    dets = predict_multiscale(model, torch.zeros(1, 3, 64, 64), affine[None], (0.5, 1.0, 1.5),
                              image_sizes=[(150, 200)])[0]
    want = boxes_to_original(np.c_[boxes, np.ones(3), classes], affine, (150, 200))
    top = dets[:3]  # one per object at score ~1; each object's copies from the other scales decayed
    order = np.argsort(top[:, 5])
    np.testing.assert_allclose(top[order, :4], want[np.argsort(classes), :4], atol=1e-3)
    np.testing.assert_allclose(top[:, 4], 1.0, atol=1e-6)
    assert dets[3:, 4].max() <= math.exp(-1 / 0.5) + 1e-6  # duplicates: IoU ~1 -> score * exp(-2) at most
