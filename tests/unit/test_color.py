"""The official colour augmentation on the device: hand-computed values per step, the outputs of the
official ``color_aug`` itself (``tests/fixtures/official/official_color.npz``, made as the other
official fixtures: see ``test_official_parity.py``), the fused normalisation, seeding, and that
validation never gets it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_fixtures import load_official, official_cases

from centernet.color import (
    BRIGHTNESS,
    CONTRAST,
    EIG_VAL,
    EIG_VEC,
    SATURATION,
    ColorAugment,
    ColorParams,
    color_augment,
    draw_color_params,
    to_network_input,
)
from centernet.transforms import COCO_MEAN_BGR, COCO_STD_BGR, normalize_batch

# Two pixels, BGR in [0, 1]: gray = 0.114 B + 0.587 G + 0.299 R = 0.437 and 0.2407; mean 0.33885.
PIXELS = torch.tensor([[0.2, 0.4, 0.6], [0.8, 0.0, 0.5]], dtype=torch.float32)  # [2 px, BGR]
IMAGE = PIXELS.T.reshape(1, 3, 1, 2)  # [1, 3, 1, 2]


def params(order=(0, 1, 2), alpha=(1.0, 1.0, 1.0), lighting=(0.0, 0.0, 0.0), b: int = 1) -> ColorParams:
    return ColorParams(torch.tensor([order] * b), torch.tensor([alpha] * b, dtype=torch.float64),
                       torch.tensor([lighting] * b, dtype=torch.float64))


def pixels(out: torch.Tensor) -> torch.Tensor:
    return out[0].reshape(3, 2).T  # [2 px, BGR]


@pytest.mark.parametrize("case, alpha, lighting, expected", [
    # brightness 1.2: 1.2 x
    ("brightness", (1.2, 1, 1), (0, 0, 0), [[0.24, 0.48, 0.72], [0.96, 0.0, 0.6]]),
    # contrast 0.5: 0.5 x + 0.5 * 0.33885 (the image's mean gray)
    ("contrast", (1, 0.5, 1), (0, 0, 0), [[0.269425, 0.369425, 0.469425], [0.569425, 0.169425, 0.419425]]),
    # saturation 1.5: 1.5 x - 0.5 * gray(pixel); not clipped below 0
    ("saturation", (1, 1, 1.5), (0, 0, 0), [[0.0815, 0.3815, 0.6815], [1.07965, -0.12035, 0.62965]]),
    # lighting (0.1, 0, 0): + 0.1 * eigval[0] * eigvec[:, 0] = (-0.0125836, -0.0124925, -0.0120131)
    ("lighting", (1, 1, 1), (0.1, 0, 0), [[0.1874164, 0.3875075, 0.5879869], [0.7874164, -0.0124925, 0.4879869]]),
])
def test_each_step_matches_hand_computed_values(case, alpha, lighting, expected):
    out = color_augment(IMAGE, params(alpha=alpha, lighting=lighting))
    torch.testing.assert_close(pixels(out), torch.tensor(expected), atol=2e-6, rtol=0)


def test_steps_run_in_the_drawn_order_with_the_gray_of_the_original_image():
    alpha = (1.2, 0.5, 1.0)
    b_then_c = color_augment(IMAGE, params(order=(BRIGHTNESS, CONTRAST, SATURATION), alpha=alpha))
    c_then_b = color_augment(IMAGE, params(order=(CONTRAST, BRIGHTNESS, SATURATION), alpha=alpha))
    # 0.5 (1.2 x) + 0.5 m = 0.6 x + 0.169425   vs   1.2 (0.5 x + 0.5 m) = 0.6 x + 0.20331 (m = 0.33885)
    torch.testing.assert_close(pixels(b_then_c)[0], torch.tensor([0.289425, 0.409425, 0.529425]), atol=2e-6, rtol=0)
    torch.testing.assert_close(pixels(c_then_b)[0], torch.tensor([0.32331, 0.44331, 0.56331]), atol=2e-6, rtol=0)


def _color_cases() -> list[tuple[str, dict[str, np.ndarray]]]:
    return official_cases("official_color", "color", width=2)


def _official_params(case: dict[str, np.ndarray]) -> ColorParams:
    """The official call's draws as ``ColorParams``: the alphas re-indexed from run order to op id."""
    order = torch.from_numpy(case["order"])  # [3] op ids in the order the steps ran
    alpha = torch.empty(3, dtype=torch.float64)
    alpha[order] = torch.from_numpy(case["alpha"])
    return ColorParams(order[None], alpha[None], torch.from_numpy(case["lighting"])[None])


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]  # [H, W, 3] -> [1, 3, H, W]


@pytest.mark.parametrize("name, case", _color_cases(), ids=[n for n, _ in _color_cases()])
def test_color_augment_equals_official_color_aug(name, case):
    """``official_color.npz``: ``utils/image.py color_aug(data_rng, image, eig_val, eig_vec)``, unmodified.

    Called as ``ctdet.py`` calls it, in place on a float32 BGR ``[H, W, 3]`` image (``image``, the
    input; ``out``, the image after the call), with the official ``_eig_val``/``_eig_vec`` of
    ``datasets/dataset/coco.py`` (stored as ``eig_val``/``eig_vec``). ``seeds`` holds (Python
    ``random.seed``, ``np.random.RandomState`` seed). Cases: uniform random images 8x8, 5x7, 16x24,
    1x1 (numpy ``default_rng(20240601)``), a uint8 20x20 image ``/ 255.`` as ctdet makes its input,
    a constant gray (0.5) and a constant colour (BGR 0.2, 0.7, 0.4) image, a 12x12 image of values
    in [0, 0.02] and [0.98, 1] (with an exact 0 and 1) under the first seed from 7 whose result leaves
    [0, 1] on both sides (the official code does not clip); each of these with its own seeds (the
    case index); then four 12x12 random images through one ``RandomState(123)`` (the official
    dataset's seed) after one ``random.seed(100)``, as consecutive samples of one loader worker.

    The draws the official call made, ``order`` (op ids 0 brightness, 1 contrast, 2 saturation, the
    positions in its ``functions`` list, in the order ``random.shuffle`` left them), ``alpha`` (each
    step's ``1 + uniform(-0.4, 0.4)``, in run order) and ``lighting`` (``normal(scale=0.1, size=3)``),
    were recovered by replaying the same seeds through the same RNG calls in the same order; the
    generating script checked that the replay left both generators in the state the official call
    left them in.

    Tolerance: 2e-6 absolute. The official code rounds to float32 after each in-place operation
    (up to seven, on values within (-0.8, 2.1), half an ulp each: at most 2.4e-7), ours once per
    operation of the folded map from float64 coefficients; the largest difference is 4.8e-7. The
    faults tried on ``centernet.color`` (two steps swapped, steps reversed, lighting dropped, the
    earlier wrong third eigenvalue 0.00124462, RGB gray weights, clipping to [0, 1]) each fail 10 or
    more of the 12 cases, each failing case by 6e-6 or more (the eigenvalue), 8e-4 or more (the rest).
    """
    ours = color_augment(_chw(case["image"]), _official_params(case))  # [1, 3, H, W]
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), case["out"], atol=2e-6, rtol=0)


def test_fused_network_input_equals_official_color_aug_then_standardised():
    """The fused uint8 path on the official fixture's uint8 case: ``to_network_input`` equals the
    official output standardised as ``ctdet.py`` does, ``(out - mean) / std`` in float32.

    Tolerance 1e-5 absolute: the 2e-6 of the colour step divided by the smallest std (0.274), plus
    the float32 rounding of values up to 4.7 in the fused pass (ulp 4.8e-7).
    """
    case = dict(_color_cases())["uint8_div255_20x20"]
    image_u8 = np.rint(case["image"] * 255).astype(np.uint8)  # [H, W, 3]
    assert np.array_equal(image_u8.astype(np.float32) / 255.0, case["image"])
    fused = to_network_input(_chw(image_u8), _official_params(case))  # [1, 3, H, W]
    expected = (case["out"] - COCO_MEAN_BGR) / COCO_STD_BGR  # [H, W, 3] float32
    np.testing.assert_allclose(fused[0].permute(1, 2, 0).numpy(), expected, atol=1e-5, rtol=0)


def test_color_fixture_covers_the_cases():
    """The fixture was made with our constants, holds every step order, and leaves [0, 1]."""
    data = load_official("official_color")
    np.testing.assert_array_equal(data["eig_val"], EIG_VAL)
    np.testing.assert_array_equal(data["eig_vec"], EIG_VEC)
    assert (BRIGHTNESS, CONTRAST, SATURATION) == (0, 1, 2)  # the official ``functions`` list order
    cases = dict(_color_cases())
    assert len({tuple(c["order"]) for c in cases.values()}) == 6
    alphas = np.concatenate([c["alpha"] for c in cases.values()])
    assert alphas.min() >= 0.6 and alphas.max() <= 1.4
    near = cases["near_0_and_1_12x12"]["out"]
    assert near.min() < 0 and near.max() > 1
    assert not np.array_equal(cases["stream_0"]["alpha"], cases["stream_1"]["alpha"])


def test_fused_network_input_equals_augment_then_standardise():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 24, 20, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)  # channels-last
    p = draw_color_params(4, g)
    fused = to_network_input(images, p)
    assert fused.is_contiguous() and fused.dtype == torch.float32
    mean = torch.from_numpy(COCO_MEAN_BGR).view(1, 3, 1, 1)
    std = torch.from_numpy(COCO_STD_BGR).view(1, 3, 1, 1)
    reference = (color_augment(images.float() / 255, p) - mean) / std
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    # identity parameters: exactly the plain normalisation
    plain = to_network_input(images)
    assert plain.is_contiguous() and torch.equal(plain, normalize_batch(images))
    torch.testing.assert_close(to_network_input(images, params(b=4)), plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("augment", [False, True])
def test_channels_last_network_input_has_the_same_values(augment):
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 3, 16, 12), dtype=torch.uint8, generator=g)  # NCHW input
    p = draw_color_params(3, g) if augment else None
    dense = to_network_input(images, p)
    last = to_network_input(images, p, memory_format=torch.channels_last)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert torch.equal(last, dense)


def test_draws_are_keyed_by_seed_epoch_image_and_view_not_by_batching():
    ids = list(range(100, 612))
    a = ColorAugment(seed=3)
    pa = a.draw(ids)
    assert a.draw(ids[:2]).alpha.tolist() == pa.alpha[:2].tolist()  # a sample's draw ignores its batch
    assert torch.equal(ColorAugment(seed=3).draw(ids[::-1]).alpha, pa.alpha.flip(0))
    assert not torch.equal(ColorAugment(seed=4).draw(ids).alpha, pa.alpha)
    assert not torch.equal(a.draw(ids, [1] * len(ids)).alpha, pa.alpha)  # another view
    a.set_epoch(1)
    assert not torch.equal(a.draw(ids).alpha, pa.alpha)
    a.set_epoch(0)
    assert torch.equal(a.draw(ids).lighting, pa.lighting)
    assert pa.alpha.min() >= 0.6 and pa.alpha.max() <= 1.4
    assert abs(float(pa.lighting.std()) - 0.1) < 0.01
    assert len({tuple(o) for o in pa.order.tolist()}) == 6  # every order occurs
    with pytest.raises(ValueError, match="2 image ids but 1 views"):
        a.draw([1, 2], [0])


def test_colour_is_applied_only_when_given_and_only_to_uint8():
    from centernet.engine import move_batch

    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    batch = {"image": images, "hm": torch.zeros(2, 1, 2, 2), "wh": torch.zeros(2, 4, 2),
             "reg": torch.zeros(2, 4, 2), "ind": torch.zeros(2, 4, dtype=torch.int64),
             "mask": torch.zeros(2, 4, dtype=torch.uint8), "image_id": torch.tensor([7, 9]),
             "view": torch.tensor([0, 1])}
    assert torch.equal(move_batch(batch, "cpu")["image"], normalize_batch(images))
    color = ColorAugment(0)
    augmented = move_batch(batch, "cpu", color=color)["image"]
    assert not torch.allclose(augmented, normalize_batch(images))
    torch.testing.assert_close(augmented, to_network_input(images, color.draw([7, 9], [0, 1])), atol=0, rtol=0)
    with pytest.raises(ValueError, match="needs the uint8 images and the image ids"):
        move_batch({**batch, "image": normalize_batch(images)}, "cpu", color=color)
    with pytest.raises(ValueError, match="needs the uint8 images and the image ids"):
        move_batch({k: v for k, v in batch.items() if k != "image_id"}, "cpu", color=color)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="jitter must be in"):
        ColorAugment(jitter=1.5)
    with pytest.raises(ValueError, match="permutations"):
        params(order=(0, 0, 1))
    with pytest.raises(ValueError, match="uint8"):
        to_network_input(torch.zeros(1, 3, 2, 2))
