"""A dataset with every kind of defect: exact accept/repair/reject counts, serially and through Ray."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
from PIL import Image

from centernet.transforms import transform_boxes
from pipeline.precompute import precompute
from pipeline.reader import iter_samples, read_manifest
from pipeline.schema import PrecomputeSettings
from pipeline.validate import decode_image, validate_dataset

SETTINGS = PrecomputeSettings.of(input_size=128, augment=False, views=1)


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def build_bad_dataset(root: Path) -> tuple[Path, Path, dict[str, int]]:
    """Every validation case at least once; returns (images dir, annotation file, expected counts)."""
    img = root / "images"
    img.mkdir(parents=True)
    cv2.imwrite(str(img / "good.jpg"), _rgb(80, 100))
    (img / "empty.jpg").write_bytes(b"")
    full = cv2.imencode(".jpg", _rgb(80, 100, 1))[1].tobytes()
    (img / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (img / "garbage.jpg").write_bytes(b"this is not an image" * 50)
    Image.fromarray(_rgb(50, 60)[:, :, 0], mode="L").save(img / "gray.png")
    Image.fromarray(np.dstack([_rgb(50, 60), np.full((50, 60), 128, np.uint8)]), mode="RGBA").save(img / "rgba.png")
    Image.fromarray(_rgb(50, 60)).convert("P").save(img / "palette.png")
    Image.fromarray((np.arange(50 * 60, dtype=np.uint16).reshape(50, 60) * 20)).save(img / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: stored 60x40 (w x h) shows as 40x60
    Image.fromarray(_rgb(40, 60)).save(img / "exif.jpg", exif=exif.tobytes())
    cv2.imwrite(str(img / "wrongsize.jpg"), _rgb(30, 40))
    cv2.imwrite(str(img / "negative.jpg"), _rgb(30, 40))
    images = [
        {"id": 1, "file_name": "good.jpg", "width": 100, "height": 80},
        {"id": 2, "file_name": "missing.jpg", "width": 10, "height": 10},
        {"id": 3, "file_name": "empty.jpg", "width": 10, "height": 10},
        {"id": 4, "file_name": "truncated.jpg", "width": 100, "height": 80},
        {"id": 5, "file_name": "garbage.jpg", "width": 10, "height": 10},
        {"id": 6, "file_name": "gray.png", "width": 60, "height": 50},
        {"id": 7, "file_name": "rgba.png", "width": 60, "height": 50},
        {"id": 8, "file_name": "palette.png", "width": 60, "height": 50},
        {"id": 9, "file_name": "gray16.png", "width": 60, "height": 50},
        {"id": 10, "file_name": "exif.jpg", "width": 40, "height": 60},
        {"id": 11, "file_name": "wrongsize.jpg", "width": 400, "height": 300},
        {"id": 12, "file_name": "negative.jpg", "width": 40, "height": 30},
        {"id": 1, "file_name": "good_again.jpg", "width": 100, "height": 80},  # duplicate id
        {"id": 13, "width": 10, "height": 10},  # no file_name
    ]
    ann = lambda i, im, bbox, cat=1, **kw: {"id": i, "image_id": im, "category_id": cat, "bbox": bbox,
                                            "area": 1.0, "iscrowd": 0, **kw}
    annotations = [
        ann(1, 1, [10, 10, 20, 30]),                 # accepted
        ann(2, 1, [10, 10, 0, 30]),                  # zero width -> rejected
        ann(3, 1, [10, 10, 20, -5]),                 # negative height -> rejected
        ann(4, 1, [float("nan"), 10, 20, 30]),       # NaN -> rejected
        ann(5, 1, [90, 70, 30, 30]),                 # partly outside -> clipped (repaired)
        ann(6, 1, [150, 10, 20, 20]),                # wholly outside -> rejected
        ann(7, 1, [10, 10, 20, 20], cat=42),         # unknown category -> rejected
        ann(8, 999, [10, 10, 20, 20]),               # missing image -> rejected
        ann(1, 1, [30, 30, 10, 10]),                 # duplicate annotation id -> rejected
        ann(10, 1, [40, 40, 30, 30], iscrowd=1),     # crowd: accepted, not a training target
        ann(11, 2, [1, 1, 5, 5]),                    # on a missing image -> rejected
        ann(12, 6, [5, 5, 20, 20], cat=2),           # accepted (grayscale image)
        ann(13, 10, [5, 5, 20, 40], cat=2),          # accepted (EXIF image, display coordinates)
        ann(14, 12, [-5, 5, 20, 10], iscrowd=1),     # crowd, partly outside -> clipped (repaired)
    ]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(data))  # NaN is written as NaN, which json reads back
    expected = {
        "images_input": 14, "images_accepted": 2, "images_repaired": 6, "images_rejected": 6,
        "images_negative": 5,  # negative (its only box is crowd), rgba, palette, gray16, wrongsize
        # crowd boxes are accepted/repaired like any other and counted once more as crowd
        "annotations_input": 14, "annotations_accepted": 4, "annotations_repaired": 2,
        "annotations_rejected": 8, "annotations_crowd": 2,
    }
    return img, path, expected


def test_decode_image_conversions(tmp_path):
    img, _, _ = build_bad_dataset(tmp_path)
    for name, why in [("gray.png", "grayscale"), ("rgba.png", "RGBA"), ("palette.png", "palette"),
                      ("gray16.png", "16-bit"), ("exif.jpg", "EXIF orientation 6")]:
        image, repairs = decode_image(img / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert any(why in r for r in repairs), (name, repairs)
    assert decode_image(img / "exif.jpg")[0].shape == (60, 40, 3)
    g16 = decode_image(img / "gray16.png")[0]
    assert g16.max() > 200 and g16.min() == 0  # scaled from 16 bits, not clipped
    assert decode_image(img / "good.jpg")[1] == []


def test_serial_validation_counts(tmp_path):
    img, ann, expected = build_bad_dataset(tmp_path)
    result = validate_dataset(img, ann)
    assert {k: result.counts[k] for k in expected} == expected
    assert len(result.rejects) == 6 + 6 + 8 + 2
    entries = {r.image_id: r for r in result.results}  # training boxes: never the crowd ones (10, 14)
    np.testing.assert_array_equal(entries[1].boxes, [[10, 10, 30, 40], [90, 70, 100, 80]])
    assert entries[12].boxes.shape == (0, 4) and [a["iscrowd"] for a in entries[12].clean_annotations] == [1]
    reasons = " | ".join(r["reason"] for r in result.rejects)
    for needle in ("missing", "empty", "truncated", "duplicate image id", "no file_name", "zero or negative",
                   "NaN", "wholly outside", "clipped", "unknown category", "missing image",
                   "duplicate annotation id", "disagrees with the file", "EXIF", "16-bit", "palette"):
        assert needle in reasons, needle


def test_precompute_bad_dataset_counts_and_coverage(tmp_path):
    img, ann, expected = build_bad_dataset(tmp_path)
    out = tmp_path / "out"
    result = precompute(img, ann, out, SETTINGS, chunk_size=4, workers=2, progress=False)
    manifest = read_manifest(out)
    assert {k: manifest["counts"][k] for k in expected} == expected
    assert result.manifest["num_samples"] == 8 == manifest["num_images"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 22
    assert all({"file", "image_id", "annotation_id", "reason", "action", "item"} <= set(r) for r in rejects)
    # every input image id is in the output or in rejects.jsonl
    out_ids = {s["image_id"] for s in iter_samples(out)}
    rejected_ids = {r["image_id"] for r in rejects if r["item"] == "image" and r["action"] == "rejected"}
    input_ids = {im["id"] for im in json.loads(ann.read_text())["images"]}
    assert input_ids <= out_ids | rejected_ids | {None}
    assert out_ids == {1, 6, 7, 8, 9, 10, 11, 12}
    clean = json.loads((out / "annotations.clean.json").read_text())
    assert sorted(a["id"] for a in clean["annotations"]) == [1, 5, 10, 12, 13, 14]
    assert next(a for a in clean["annotations"] if a["id"] == 5)["bbox"] == [90, 70, 10, 10]
    # crowd boxes stay in the clean annotations (pycocotools ignores detections on them) ...
    crowd = {a["id"]: a for a in clean["annotations"] if a["iscrowd"] == 1}
    assert sorted(crowd) == [10, 14] and crowd[14]["bbox"] == [0, 5, 15, 10]
    # ... but are never training targets: image 1 trains on annotations 1 and 5 only, image 12 on none
    samples = {s["image_id"]: s for s in iter_samples(out)}
    np.testing.assert_allclose(transform_boxes(samples[1]["boxes"], samples[1]["affine"]),
                               [[10, 10, 30, 40], [90, 70, 100, 80]], atol=1e-3)
    assert samples[1]["mask"].sum() == 2
    assert samples[12]["boxes"].shape == (0, 4) and samples[12]["mask"].sum() == 0 and samples[12]["hm"].max() == 0
    assert next(i for i in clean["images"] if i["id"] == 11)["width"] == 40
    assert manifest["source_annotations"] == str(ann.resolve())
    assert Path(manifest["clean_annotations"]).exists()
    assert (out / "stats.png").read_bytes()[:4] == b"\x89PNG"


def test_all_rejected_dataset_is_an_error(tmp_path):
    img = tmp_path / "images"
    img.mkdir()
    (img / "a.jpg").write_bytes(b"")
    (img / "b.jpg").write_bytes(b"junk")
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                                          {"id": 3, "file_name": "nope.jpg"}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(ValueError, match="every one of the 3 images was rejected"):
        precompute(img, ann, tmp_path / "out", SETTINGS, progress=False)
    assert len((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "out" / "manifest.json").exists()
    ann.write_text(json.dumps({"images": [{"file_name": "a.jpg"}], "annotations": [],
                               "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(ValueError, match="rejected"):
        precompute(img, ann, tmp_path / "out2", SETTINGS, progress=False)
