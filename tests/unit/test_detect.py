"""Detections on whole images and image files: letterbox, batched predict, back-mapping, bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from centernet.data import CategoryMap
from centernet.decode import boxes_to_original
from centernet.detect import check_bgr_image, detect_images, letterbox_image, named_results
from centernet.image_files import ImageFileDataset, collate_images, decode_image, read_image
from centernet.inference import predict
from centernet.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 3).eval()


def test_letterbox_image_affine_maps_output_pixels_back_to_the_original():
    image = np.zeros((50, 100, 3), np.uint8)
    boxed, affine = letterbox_image(image, (64, 64))
    assert boxed.shape == (64, 64, 3)
    # the 64x64 input holds the 100-wide image scaled by 0.64; output map is 16x16 (x4 = input px)
    np.testing.assert_allclose(affine @ np.array([0.0, 8.0, 1.0]), [0.0, 25.0])  # left edge, centre row
    np.testing.assert_allclose(affine @ np.array([16.0, 8.0, 1.0]), [100.0, 25.0])


def test_detect_images_equals_letterbox_predict_and_back_mapping(model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 70), (90, 50), (64, 64))]
    got = detect_images(model, images, (64, 64), batch_size=2)
    for image, dets in zip(images, got):
        boxed, affine = letterbox_image(image, (64, 64))
        raw = predict(model, torch.from_numpy(boxed).permute(2, 0, 1)[None])[0].numpy()
        np.testing.assert_allclose(dets, boxes_to_original(raw, affine, image.shape[:2]), rtol=1e-5, atol=1e-4)
        assert dets[:, [0, 2]].max() <= image.shape[1] and dets[:, [1, 3]].max() <= image.shape[0]


def test_check_bgr_image_names_the_bad_one():
    assert check_bgr_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(ValueError, match=r"image 3: expected a uint8 BGR array \[H, W, 3\], got dtype float32"):
        check_bgr_image(np.zeros((4, 5, 3), np.float32), 3)


def test_named_results_use_dataset_ids_and_names():
    cats = CategoryMap((2, 7, 90), ("square", "circle", "triangle"))
    dets = np.array([[10, 20, 30, 60, 0.9, 2], [0, 0, 5, 5, 0.2, 0]])
    assert named_results(dets, 5, cats, 0.3) == [
        {"image_id": 5, "category_id": 90, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.9, "category_name": "triangle"}]


def test_image_files_decode_and_flag_unreadable_files(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((30, 40, 3), 200, np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    assert read_image(good).shape == (30, 40, 3)
    np.testing.assert_array_equal(decode_image(good.read_bytes()), cv2.imread(str(good)))
    with pytest.raises(ValueError, match="bad.jpg: not a decodable image"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png")
    ds = ImageFileDataset([good, bad], (64, 64), keep_original=True)
    batch = collate_images([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 64, 64) and batch["image"].dtype == torch.uint8
    assert batch["ok"] == [True, False] and batch["hw"][0] == (30, 40)
    assert "not a decodable image" in batch["error"][1] and batch["original"][0].shape == (30, 40, 3)
