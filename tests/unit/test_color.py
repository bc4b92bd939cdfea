"""The official colour augmentation on the device: hand-computed values per step, the official
step-by-step computation, the fused normalisation, seeding, and that validation never gets it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from official_reference import official_color_aug  # noqa: E402

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


def test_equals_the_official_step_by_step_computation_on_random_images():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 20, 24, generator=g)  # [B, 3, H, W] in [0, 1]
    p = draw_color_params(6, g)
    out = color_augment(images, p)
    names = ("brightness", "contrast", "saturation")
    for b in range(6):
        order = p.order[b].tolist()
        ref = official_color_aug(images[b].permute(1, 2, 0).numpy().copy(), [names[i] for i in order],
                                 [float(p.alpha[b, i]) for i in order], p.lighting[b].numpy(), EIG_VAL, EIG_VEC)
        np.testing.assert_allclose(out[b].permute(1, 2, 0).numpy(), ref, atol=3e-6, rtol=0)


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
