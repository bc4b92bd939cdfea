"""COCO reading and the category-id <-> class-index map (the usual cause of AP = 0 on custom data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from centernet.data import CategoryMap, read_coco, xywh_to_xyxy, xyxy_to_xywh


def test_category_round_trip_with_sparse_ids():
    cats = CategoryMap.from_coco([{"id": 90, "name": "c"}, {"id": 2, "name": "a"}, {"id": 7, "name": "b"}])
    assert cats.category_ids == (2, 7, 90) and cats.names == ("a", "b", "c")
    assert [cats.to_index(i) for i in (2, 7, 90)] == [0, 1, 2]
    assert [cats.to_category_id(i) for i in range(3)] == [2, 7, 90]
    np.testing.assert_array_equal(cats.to_category_ids(np.array([2, 0, 1])), [90, 2, 7])
    assert CategoryMap.from_dict(json.loads(json.dumps(cats.to_dict()))) == cats
    with pytest.raises(KeyError, match="category id 3"):
        cats.to_index(3)


def test_duplicate_or_missing_categories_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        CategoryMap((1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="no categories"):
        CategoryMap.from_coco([])


def test_box_format_conversion():
    xywh = np.array([[10, 20, 5, 8]], np.float32)
    np.testing.assert_array_equal(xywh_to_xyxy(xywh), [[10, 20, 15, 28]])
    np.testing.assert_array_equal(xyxy_to_xywh(xywh_to_xyxy(xywh)), xywh)


def test_read_coco_maps_ids_and_keeps_every_box(shapes_dataset):
    data = read_coco(shapes_dataset.annotations)
    assert data.categories.category_ids == (2, 7, 90)
    raw = json.loads(shapes_dataset.annotations.read_text())
    assert not any(a["iscrowd"] for a in raw["annotations"])
    assert sum(len(r.boxes) for r in data.images) == len(raw["annotations"])
    first = raw["annotations"][0]
    record = next(r for r in data.images if r.image_id == first["image_id"])
    x, y, w, h = first["bbox"]
    assert [x, y, x + w, y + h] in record.boxes.tolist()
    assert data.categories.to_category_id(int(record.classes[record.boxes.tolist().index([x, y, x + w, y + h])])) \
        == first["category_id"]


def test_read_coco_drops_crowd_annotations(tmp_path):
    ann = lambda i, im, cat, bbox, **kw: {"id": i, "image_id": im, "category_id": cat, "bbox": bbox, **kw}  # noqa: E731
    path = tmp_path / "crowd.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "b.jpg", "width": 50, "height": 50}],
        "annotations": [ann(1, 1, 7, [10, 10, 20, 30], iscrowd=0), ann(2, 1, 2, [40, 40, 30, 30], iscrowd=1),
                        ann(3, 1, 2, [5, 50, 10, 10]),  # no iscrowd key: an ordinary box
                        ann(4, 2, 7, [0, 0, 50, 50], iscrowd=1)],
        "categories": [{"id": 2, "name": "a"}, {"id": 7, "name": "b"}]}))
    records = {r.image_id: r for r in read_coco(path).images}
    np.testing.assert_array_equal(records[1].boxes, [[10, 10, 30, 40], [5, 50, 15, 60]])
    np.testing.assert_array_equal(records[1].classes, [1, 0])
    assert records[2].boxes.shape == (0, 4) and records[2].classes.shape == (0,)


def test_read_coco_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
                               "annotations": [{"id": 5, "image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]}],
                               "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(ValueError, match="annotation 5 has unknown category id 9"):
        read_coco(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_coco(tmp_path / "x.json")
