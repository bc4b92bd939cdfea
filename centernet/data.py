"""COCO-format annotation reading and the category-id mapping.

A wrong mapping between the dataset's own category ids (``2, 7, 90``) and the contiguous class
indices the network predicts (``0, 1, 2``) is the most common cause of AP = 0 on custom data, so
it lives in one class, :class:`CategoryMap`, used by training, decoding and evaluation alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CategoryMap:
    """Contiguous class index (0..C-1) <-> the dataset's own category id, sorted by id."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.names):
            raise ValueError("category_ids and names must have the same length")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"duplicate category ids in {list(self.category_ids)}")
        object.__setattr__(self, "_index", {cid: i for i, cid in enumerate(self.category_ids)})

    @classmethod
    def from_coco(cls, categories: list[dict[str, Any]]) -> CategoryMap:
        """Build from a COCO ``categories`` list (ordered by id, as the official ``cat_ids``)."""
        if not categories:
            raise ValueError("the annotation file has no categories")
        cats = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c.get("name", c["id"])) for c in cats))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoryMap:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(int(i) for i in data["category_ids"]), tuple(data["names"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in manifests and checkpoints."""
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._index

    def to_index(self, category_id: int) -> int:
        """Dataset category id -> contiguous index; ``KeyError`` naming the id if unknown."""
        try:
            return self._index[int(category_id)]
        except KeyError:
            raise KeyError(
                f"category id {category_id!r} is not in the dataset's categories "
                f"{list(self.category_ids)}"
            ) from None

    def to_category_id(self, index: int) -> int:
        """Contiguous index -> dataset category id."""
        if not 0 <= int(index) < self.num_classes:
            raise IndexError(f"class index {index} outside 0..{self.num_classes - 1}")
        return self.category_ids[int(index)]

    def to_category_ids(self, indices: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`to_category_id`: ``[N]`` indices -> ``[N]`` int64 ids."""
        return np.asarray(self.category_ids, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``[N, 4]`` x y w h -> ``[N, 4]`` x1 y1 x2 y2 (float32)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` x1 y1 x2 y2 -> COCO ``[N, 4]`` x y w h (float32)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


@dataclass(frozen=True)
class ImageRecord:
    """One image with its training annotations.

    ``iscrowd`` annotations are left out of the training boxes, as mmdetection does; the official
    ctdet loader trains on them like any other box. pycocotools evaluation, which reads them from
    the annotation file, treats them as regions to ignore.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] float32 x1 y1 x2 y2, original image pixels
    classes: np.ndarray  # [N] int64 contiguous indices


@dataclass(frozen=True)
class CocoDataset:
    """A parsed COCO annotation file: its category map and one record per image (in file order)."""

    path: Path
    categories: CategoryMap
    images: tuple[ImageRecord, ...]


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO annotation file with errors that name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: missing the {key!r} list of the COCO format")
    return data


def read_coco(path: str | Path) -> CocoDataset:
    """Parse a COCO annotation file into contiguous-class records, without ``iscrowd`` boxes.

    Strict: an annotation with an unknown category or image id raises, naming it. Use
    ``pipeline.validate`` to accept, repair or reject items of an untrusted dataset instead.
    """
    path = Path(path)
    data = load_coco_json(path)
    cats = CategoryMap.from_coco(data["categories"])
    per_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in data["images"]}
    for ann in data["annotations"]:
        image_id = int(ann["image_id"])
        if image_id not in per_image:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to unknown image {image_id}")
        if ann["category_id"] not in cats:
            raise ValueError(
                f"{path}: annotation {ann.get('id')} has unknown category id {ann['category_id']}"
            )
        if not ann.get("iscrowd", 0):
            per_image[image_id].append(ann)
    records = []
    for im in data["images"]:
        anns = per_image[int(im["id"])]
        boxes = xywh_to_xyxy(np.array([a["bbox"] for a in anns], dtype=np.float32))
        classes = np.array([cats.to_index(a["category_id"]) for a in anns], dtype=np.int64)
        records.append(
            ImageRecord(int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"]),
                        boxes, classes)
        )
    return CocoDataset(path, cats, tuple(records))
