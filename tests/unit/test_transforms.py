"""The letterbox affine (official get_affine_transform semantics) and its inverse."""

from __future__ import annotations

import re

import numpy as np
import pytest

from centernet.transforms import (
    check_input_size,
    flip_boxes_horizontal,
    get_affine_transform,
    letterbox_params,
    normalize_image,
    transform_boxes,
    transform_points,
)


def test_letterbox_maps_image_into_the_square_keeping_aspect():
    center, scale = letterbox_params((300, 600))  # H, W
    t = get_affine_transform(center, scale, 0, (512, 512))
    pts = transform_points(np.array([[0, 0], [600, 300], [300, 150]]), t)
    np.testing.assert_allclose(pts, [[0, 128], [512, 384], [256, 256]], atol=1e-4)


def test_output_map_transform_is_input_over_four():
    center, scale = letterbox_params((480, 640))
    t_in = get_affine_transform(center, scale, 0, (512, 512))
    t_out = get_affine_transform(center, scale, 0, (128, 128))
    p = np.array([[123.0, 321.0]])
    np.testing.assert_allclose(transform_points(p, t_out), transform_points(p, t_in) / 4, atol=1e-4)


def test_inverse_round_trip_and_non_square_output():
    center, scale = np.array([210.0, 170.0], np.float32), 333.0
    t = get_affine_transform(center, scale, 0, (96, 64), shift=(0.1, -0.05))
    t_inv = get_affine_transform(center, scale, 0, (96, 64), shift=(0.1, -0.05), inv=True)
    boxes = np.array([[10.0, 20.0, 200.0, 120.0]])
    np.testing.assert_allclose(transform_boxes(transform_boxes(boxes, t), t_inv), boxes, atol=1e-3)
    np.testing.assert_allclose(np.vstack([t_inv, [0, 0, 1]]) @ np.vstack([t, [0, 0, 1]]), np.eye(3), atol=1e-6)


def test_rotation_keeps_center():
    t = get_affine_transform(np.array([50.0, 50.0]), 100.0, 90, (100, 100))
    np.testing.assert_allclose(transform_points(np.array([[50.0, 50.0]]), t), [[50, 50]], atol=1e-4)


def test_bad_scale_rejected():
    with pytest.raises(ValueError, match="scale"):
        get_affine_transform(np.array([1.0, 1.0]), 0.0, 0, (8, 8))


def test_flip_boxes_official_convention():
    np.testing.assert_allclose(flip_boxes_horizontal(np.array([[10, 5, 30, 9]]), 100), [[69, 5, 89, 9]])


def test_normalize_image_shape_and_values():
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    out = normalize_image(img)
    assert out.shape == (3, 4, 6) and out.dtype == np.float32
    assert out[2, 0, 0] == pytest.approx((1 - 0.47026115) / 0.27809835, rel=1e-5)
    assert out[0, 0, 0] == pytest.approx(-0.40789654 / 0.28863828, rel=1e-5)


def test_letterbox_non_square_input_fits_tall_images():
    center, scale = letterbox_params((400, 200), (384, 512))  # a tall image into a wide input
    t = get_affine_transform(center, scale, 0, (512, 384))
    pts = transform_points(np.array([[0, 0], [200, 400]]), t)
    assert pts[:, 1].min() >= -1e-4 and pts[:, 1].max() <= 384 + 1e-4
    np.testing.assert_allclose(pts[:, 1], [0, 384], atol=1e-3)
    assert letterbox_params((400, 200))[1] == letterbox_params((400, 200), (512, 512))[1] == 400


def test_normalize_batch_equals_normalize_image_for_uint8():
    import torch

    from centernet.transforms import normalize_batch

    img = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    batch = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    np.testing.assert_allclose(normalize_batch(batch)[0].numpy(), normalize_image(img), rtol=1e-5, atol=1e-5)
    floats = torch.zeros(1, 3, 2, 2)
    assert normalize_batch(floats) is floats


def test_augmented_view_maps_back_to_the_original_box_also_when_flipped():
    from centernet.sample import letterbox_view

    image = np.zeros((100, 150, 3), np.uint8)
    box = np.array([[10.0, 20.0, 50.0, 60.0]])
    mirrored = 0
    for seed in range(12):
        _, out_boxes, back = letterbox_view(image, box, (128, 128), 4, np.random.default_rng(seed))
        np.testing.assert_allclose(transform_boxes(out_boxes, back), box, atol=1e-3)
        mirrored += back[0, 0] < 0
    assert 0 < mirrored < 12  # both flipped and unflipped views were drawn
    mirror = np.array([[-1.0, 0, 99], [0, 1, 0]])
    np.testing.assert_allclose(transform_boxes(box, mirror), [[49, 20, 89, 60]])


@pytest.mark.parametrize("size", [32, 512, (384, 512), [64, 96], np.int64(128)])
def test_check_input_size_accepts_multiples_of_32(size):
    check_input_size(size)


@pytest.mark.parametrize("size", [0, -32, 100, 500, (512, 500), (500, 512), (0, 32)])
def test_check_input_size_rejects_other_sizes_naming_them(size):
    message = f"train.input_size must be a positive multiple of 32 (e.g. 512), got {size!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_input_size(size, name="train.input_size")


@pytest.mark.parametrize("size", [512.0, "512", True, (512,), (512, 512, 3), None])
def test_check_input_size_rejects_non_integers(size):
    message = f"input_size must be an int or an (H, W) pair of ints, got {size!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_input_size(size)
