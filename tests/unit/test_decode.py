"""Peak extraction, top-k, flip merging and mapping back to the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.data import CategoryMap
from centernet.decode import (
    boxes_to_original,
    decode,
    decode_probs,
    flip_merge,
    peak_nms,
    to_coco_results,
    top_peaks,
)
from centernet.transforms import get_affine_transform


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_decode_hand_built_maps():
    hm = torch.full((1, 2, 8, 10), -20.0)
    hm[0, 0, 2, 3] = _logit(0.9)
    hm[0, 0, 2, 4] = _logit(0.6)  # neighbour of a higher peak: suppressed by the 3x3 max-pool
    hm[0, 1, 6, 7] = _logit(0.8)
    wh = torch.zeros(1, 2, 8, 10)
    wh[0, :, 2, 3] = torch.tensor([4.0, 2.0])
    wh[0, :, 6, 7] = torch.tensor([2.0, 6.0])
    reg = torch.zeros(1, 2, 8, 10)
    reg[0, :, 2, 3] = torch.tensor([0.5, 0.25])
    dets = decode(hm, wh, reg, k=3)
    assert dets.shape == (1, 3, 6)
    np.testing.assert_allclose(dets[0, 0].numpy(), [1.5, 1.25, 5.5, 3.25, 0.9, 0], rtol=1e-5)
    np.testing.assert_allclose(dets[0, 1].numpy(), [6.0, 3.0, 8.0, 9.0, 0.8, 1], rtol=1e-5)
    assert dets[0, 2, 4] < 1e-6  # the suppressed neighbour does not come third


def test_peak_nms_keeps_only_local_maxima():
    heat = torch.tensor([[[[0.1, 0.5, 0.2], [0.3, 0.4, 0.1], [0.0, 0.1, 0.6]]]])
    kept = peak_nms(heat)
    assert kept[0, 0].nonzero().tolist() == [[0, 1], [2, 2]]


def test_decode_k_larger_than_map_is_capped():
    assert decode(torch.zeros(2, 1, 2, 2), torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2), k=100).shape == (2, 4, 6)


def test_flip_merge_averages_heat_and_size_keeps_offset():
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(1, c, 4, 6, generator=g) for k, c in (("hm", 2), ("wh", 2), ("reg", 2))}
    flipped = {k: v.flip(3) for k, v in out.items()}  # a perfectly flip-equivariant model
    heat, wh, reg = flip_merge(out, flipped)
    torch.testing.assert_close(heat, torch.sigmoid(out["hm"]))
    torch.testing.assert_close(wh, out["wh"])
    torch.testing.assert_close(reg, out["reg"])
    other = {k: torch.zeros_like(v) for k, v in out.items()}
    heat2, wh2, _ = flip_merge(out, other)
    torch.testing.assert_close(heat2, (torch.sigmoid(out["hm"]) + 0.5) / 2)
    torch.testing.assert_close(wh2, out["wh"] / 2)
    assert decode_probs(heat, wh, reg, k=5).shape == (1, 5, 6)


def test_boxes_to_original_inverts_the_letterbox():
    h0, w0 = 300, 400
    center, scale = np.array([w0 / 2, h0 / 2], np.float32), float(max(h0, w0))
    inv = get_affine_transform(center, scale, 0, (128, 128), inv=True)
    dets = np.array([[32.0, 40.0, 64.0, 72.0, 0.9, 1.0]])
    mapped = boxes_to_original(dets, inv)
    s = 400 / 128  # output pixels -> original pixels; the 300-high image is centred vertically
    np.testing.assert_allclose(mapped[0, :4], [32 * s, 40 * s - 50, 64 * s, 72 * s - 50], rtol=1e-5)
    outside = np.array([[-5.0, -5.0, 200.0, 200.0, 0.5, 0]])
    clipped = boxes_to_original(outside, inv, (h0, w0))
    np.testing.assert_allclose(clipped[0, :4], [0, 0, w0, h0])
    official = boxes_to_original(outside, inv)  # no image size: left unclipped, as the official code
    np.testing.assert_allclose(official[0, :4], [-5 * s, -5 * s - 50, 200 * s, 200 * s - 50], rtol=1e-5)


def test_top_peaks_hand_built():
    peaks = torch.zeros(1, 3, 2, 3)
    peaks[0, 0, 1, 2] = 0.9  # class 0, pixel 5
    peaks[0, 2, 0, 1] = 0.8  # class 2, pixel 1
    peaks[0, 1, 1, 0] = 0.7  # class 1, pixel 3
    peaks[0, 0, 0, 0] = 0.6  # class 0, pixel 0: a second peak of class 0
    scores, classes, pix = top_peaks(peaks, 3)
    torch.testing.assert_close(scores, torch.tensor([[0.9, 0.8, 0.7]]))
    assert classes.tolist() == [[0, 2, 1]] and pix.tolist() == [[5, 1, 3]]
    scores, classes, pix = top_peaks(peaks, 4)
    assert classes.tolist() == [[0, 2, 1, 0]] and pix.tolist() == [[5, 1, 3, 0]]
    assert top_peaks(peaks, 100)[0].shape == (1, 18)  # capped at C*H*W


def test_to_coco_results_maps_classes_to_dataset_ids_and_xywh():
    cats = CategoryMap((2, 7, 90), ("a", "b", "c"))
    dets = np.array([[10, 20, 30, 60, 0.8, 2], [0, 0, 1, 1, 0.01, 0]], np.float64)
    res = to_coco_results(dets, 5, cats, score_threshold=0.05)
    assert res == [{"image_id": 5, "category_id": 90, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.8}]
    with pytest.raises(IndexError):
        cats.to_category_id(3)
