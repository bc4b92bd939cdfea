"""Parity with the official CenterNet code, on golden data that the official code itself produced.

The fixtures in ``tests/fixtures/official/*.npz`` hold only inputs and outputs. They were made by
running the unmodified official sources of xingyizhou/CenterNet at commit
4c50fd3a46bdf63dbf2082c5cbb3458d39579e6c (``src/lib`` unpacked outside this project and put on
``sys.path``; Python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6, opencv 5.0.0, recorded in each file as
``official_commit`` and ``generated_with``) from a throw-away script that called their functions
on prepared inputs and saved what they returned with ``np.savez_compressed``. Neither the official
code nor that script is part of this project. Each test's docstring says which official function
produced its data and how its inputs were made (``official_color.npz``, of ``color_aug``, is
tested in ``test_color.py``).

Everything is compared exactly (bit for bit) except the two losses, which sum in a different order
or log-space and are compared to a tight relative tolerance that each test states.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_fixtures import load_official, official_cases

from centernet.decode import decode
from centernet.losses import focal_loss, reg_l1_loss
from centernet.targets import draw_gaussian, encode, gaussian_radius
from centernet.transforms import get_affine_transform


def test_gaussian_radius_equals_official():
    """``official_gaussian.npz`` ``radius_*``: ``utils/image.py gaussian_radius((h, w), min_overlap)``.

    Inputs: 70 integer (h, w) pairs from 1 to 128, 300 pairs ``ceil(uniform(0.1, 300))`` (what the
    ctdet loop passes), 200 non-integer pairs ``uniform(0.1, 300)`` (numpy seed 0); each pair at
    ``min_overlap`` 0.7 and again at one of 0.1, 0.3, 0.5, 0.9, 0.95.
    """
    data = load_official("official_gaussian")
    ours = np.array([gaussian_radius(h, w, o, variant="official")
                     for (h, w), o in zip(data["radius_hw"], data["radius_min_overlap"])])
    assert len(ours) == 1140
    np.testing.assert_array_equal(ours, data["radius_out"])
    corrected = np.array([gaussian_radius(h, w, o, variant="corrected")
                          for (h, w), o in zip(data["radius_hw"], data["radius_min_overlap"])])
    assert np.all(corrected < data["radius_out"])  # the fixture tells the two variants apart


def test_draw_gaussian_equals_official():
    """``official_gaussian.npz`` ``draw_*``: ``utils/image.py draw_umich_gaussian(hm, (x, y), r)``.

    Each case is a zero float32 map of ``draw_shape[i]`` (H, W) and a list of draws ``draw_xyr``
    (x, y, radius) made in order on it; ``draw_maps`` holds the resulting maps. Cases: maps 1x1,
    5x7, 16x16, 24x40, 40x24, radii 0, 1, 2, 5, 11, 24, centers at the four corners, the middle, the
    edges, just past the right/bottom edge and outside on every side (-30 to W+2); 12 maps of 2-6
    overlapping random draws (numpy seed 1); three draws on one center (radius 3, 6, then 2).
    """
    data = load_official("official_gaussian")
    shapes, offsets, draws = data["draw_shape"], data["draw_offsets"], data["draw_xyr"]
    map_offsets, maps = data["draw_map_offsets"], data["draw_maps"]
    assert len(shapes) == 433
    for i, (h, w) in enumerate(shapes):
        hm = np.zeros((h, w), np.float32)
        for x, y, r in draws[offsets[i]:offsets[i + 1]]:
            draw_gaussian(hm, (int(x), int(y)), int(r))
        expected = maps[map_offsets[i]:map_offsets[i + 1]].reshape(h, w)
        np.testing.assert_array_equal(hm, expected, err_msg=f"case {i}: {draws[offsets[i]:offsets[i + 1]]}")


def test_get_affine_transform_equals_official():
    """``official_affine.npz``: ``utils/image.py get_affine_transform(c, s, rot, (w, h), shift, inv)``.

    120 random calls (numpy seed 2): center ``uniform(0, 800)`` float32, scale ``uniform(50, 1200)``,
    rotation 0 (half of them), 15, -30 or 90 degrees, output sizes from {96, 128, 384, 512}, a random
    shift in every third call, ``inv`` alternating. ``affine_args`` rows are
    (cx, cy, s, rot, out_w, out_h, shift_x, shift_y, inv); ``affine_out`` the ``[2, 3]`` results.
    """
    data = load_official("official_affine")
    for (cx, cy, s, rot, out_w, out_h, sx, sy, inv), expected in zip(data["affine_args"], data["affine_out"]):
        ours = get_affine_transform(np.array([cx, cy], np.float32), s, rot, (int(out_w), int(out_h)),
                                    shift=(sx, sy), inv=bool(inv))
        np.testing.assert_array_equal(ours, expected)


def _ctdet_cases() -> list[tuple[str, dict[str, np.ndarray]]]:
    return official_cases("official_ctdet_targets", "ctdet", width=2)


@pytest.mark.parametrize("name, case", _ctdet_cases(), ids=[n for n, _ in _ctdet_cases()])
def test_encode_equals_official_ctdet_loop(name, case):
    """``official_ctdet_targets.npz``: ``datasets/sample/ctdet.py CTDetDataset.__getitem__``.

    The official class was instantiated without its COCO dataset base (``__new__``) and given a
    stand-in ``coco`` object serving one black image of the case's size and its annotations (COCO
    ``[x, y, w, h]``, category ids 1..C mapped to 0..C-1), ``split='val'`` (no augmentation: the
    letterbox affine of the image into the input size), ``down_ratio`` 4, ``max_objs`` as given, the
    umich Gaussian, no ``dense_wh``/``cat_spec_wh``. Its returned ``hm`` (stored sparse:
    ``hm_index``/``hm_value``), ``wh``, ``reg``, ``ind`` and ``reg_mask`` are the expected targets.
    ``boxes`` are the case's annotations as that loop sees them after its affine and before its
    clipping, computed with the official ``_coco_box_to_bbox``, ``get_affine_transform`` and
    ``affine_transform`` exactly as the loop computes them. Cases (numpy seed 3): six random COCO-like
    images (80 classes, Poisson(9) boxes, log-uniform sizes, some crossing the border); overlapping
    same-class boxes (nested, identical, sharing a center pixel); boxes on, across and wholly
    outside every border; degenerate boxes (zero or negative size, sub-pixel, NaN); 150 boxes in
    the 128 official slots and 20 in 6; several classes on one pixel; 384x512 inputs from wide and
    tall images; a 128x128 input; an image without boxes.
    """
    num_classes, max_objs = int(case["num_classes"]), int(case["max_objs"])
    out_h, out_w = (int(v) for v in case["output_hw"])
    ours = encode(case["boxes"], case["classes"], num_classes, (out_h, out_w), max_objs=max_objs)
    hm = np.zeros(num_classes * out_h * out_w, np.float32)
    hm[case["hm_index"]] = case["hm_value"]
    np.testing.assert_array_equal(ours["hm"], hm.reshape(num_classes, out_h, out_w))
    for key in ("wh", "reg", "ind", "mask"):
        assert ours[key].dtype == case[key].dtype, key
        np.testing.assert_array_equal(ours[key], case[key], err_msg=key)


def test_ctdet_fixture_covers_the_edge_cases():
    """The ctdet fixture really contains what its cases are named after (so the test above bites)."""
    cases = dict(_ctdet_cases())
    assert int(cases["truncate_128"]["mask"].sum()) < len(cases["truncate_128"]["mask"]) == 128
    assert len(cases["truncate_128"]["classes"]) == 128  # the official loop saw only the first 128 of 150
    assert int(cases["degenerate"]["mask"].sum()) < len(cases["degenerate"]["boxes"])
    assert np.isnan(cases["degenerate"]["boxes"]).any()
    same = cases["overlap_same_class"]
    keys = same["classes"][same["mask"][:8] == 1] * 10**6 + same["ind"][same["mask"] == 1]
    assert len(np.unique(keys)) < len(keys)  # two same-class objects on one output pixel
    assert (cases["borders"]["boxes"] < 0).any() and (cases["borders"]["boxes"][:, 2] > 127).any()
    assert tuple(cases["wide_input_tall_image"]["output_hw"]) == (96, 128)


def test_focal_loss_equals_official():
    """``official_losses.npz`` ``focal*``: ``models/losses.py _neg_loss(models/utils.py _sigmoid(logits), gt)``.

    As the official ``CtdetLoss`` calls them. Logits ``3 * randn`` (torch seed 4) of shapes
    [2,3,16,16], [1,5,24,32], [3,2,8,12], [2,4,16,16], [1,1,8,8]; ground truth drawn with the
    official ``draw_umich_gaussian`` (1-4 Gaussians per image, numpy seed 4). Case 3 saturates two
    channels (logits +12 and -12, where the 1e-4 clamp decides); case 4 has no positives.

    Tolerance: relative 1e-6, except the saturated case (2e-5): at a clamped pixel the official code
    takes ``log(1 - float32(1 - 1e-4))`` = log(1.00017e-4) in float32, ours ``log(1e-4)`` in
    log-space, a 1.7e-5 relative difference of those pixels' terms.
    """
    data = load_official("official_losses")
    for i, rel in enumerate([1e-6, 1e-6, 1e-6, 2e-5, 1e-6]):
        ours = focal_loss(torch.from_numpy(data[f"focal{i}_logits"]), torch.from_numpy(data[f"focal{i}_gt"]))
        assert ours.item() == pytest.approx(float(data[f"focal{i}_loss"]), rel=rel), f"case {i}"
    assert float(data["focal4_gt"].max()) == 0.0 and float(data["focal0_gt"].max()) == 1.0


def test_reg_l1_loss_equals_official():
    """``official_losses.npz`` ``regl1*``: ``models/losses.py RegL1Loss()(output, mask, ind, target)``.

    Outputs ``4 * randn`` (torch seed 4) of [2,2,16,16], [1,2,8,12], [3,2,4,4], [2,2,16,16]; ``ind``
    uniform over the pixels, the first 5, 10, 0 and 3 of 128, 10, 6 and 16 slots masked in, targets
    ``uniform(0, 30)`` (numpy seed 4); case 3 puts two objects on one pixel. Relative tolerance 1e-6
    (float32 sums in another order).
    """
    data = load_official("official_losses")
    for i in range(4):
        ours = reg_l1_loss(*(torch.from_numpy(data[f"regl1{i}_{k}"]) for k in ("output", "ind", "mask", "target")))
        assert ours.item() == pytest.approx(float(data[f"regl1{i}_loss"]), rel=1e-6, abs=1e-12), f"case {i}"


def _decode_cases() -> list[tuple[str, dict[str, np.ndarray]]]:
    return official_cases("official_decode", "decode", width=1)


@pytest.mark.parametrize("name, case", _decode_cases(), ids=[n for n, _ in _decode_cases()])
def test_decode_equals_official(name, case):
    """``official_decode.npz``: ``models/decode.py ctdet_decode(logits.sigmoid_(), wh, reg=reg, K=k)``.

    As ``detectors/ctdet.py`` calls it (``_nms``, the two-stage ``_topk``, ``_transpose_and_gather_feat``).
    Logits (torch seed 5): random maps of 80 classes at 12x12 (K 100), a batch of two 4x24x24, a
    non-square 5x24x40, 2x16x16 with K 10; ties: logits rounded to 0.5 (equal scores and plateaus),
    a saturated 4x4 plateau (sigmoid = 1.0) plus one score shared by two classes at one pixel, and a
    map where every score is equal. ``wh`` ``20 * rand``, ``reg`` ``rand``. Compared exactly, ties
    included: the same peaks must be picked in the same order (both make the same two
    ``torch.topk`` calls; a torch whose top-k breaks ties differently would show up here).
    """
    logits, wh, reg = (torch.from_numpy(case[k]) for k in ("logits", "wh", "reg"))
    ours = decode(logits, wh, reg, k=int(case["k"]))
    np.testing.assert_array_equal(ours.numpy(), case["dets"])


def test_decode_fixture_has_ties():
    """The tie cases do contain equal scores among the selected detections."""
    cases = dict(_decode_cases())
    for name in ("ties_quantised", "ties_saturated", "ties_all_equal"):
        scores = cases[name]["dets"][..., 4]
        assert any(len(np.unique(s)) < len(s) for s in scores), name
