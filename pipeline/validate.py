"""Forgiving validation of any COCO-format dataset: every image and annotation is accepted,
repaired or rejected with a reason.

Two stages, so the expensive one runs in parallel: :func:`validate_coco_json` checks the JSON alone
(driver), :func:`validate_entry` opens one image and checks its annotations against the real image
size (inside the precompute tasks). :func:`validate_dataset` runs both serially.

Reject/repair records (one per item, written to ``rejects.jsonl``) are dicts with ``file``,
``image_id``, ``annotation_id``, ``item`` ("image" | "annotation"), ``action`` ("rejected" |
"repaired") and ``reason``. Counts per item kind satisfy ``input == accepted + repaired + rejected``.
Crowd (``iscrowd``) annotations are counted there like any other and once more as
``annotations_crowd``; they stay in the clean annotations but are never training targets.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from centernet.data import CategoryMap, load_coco_json

EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageRejected(Exception):
    """An image that cannot be used; the message is the reason."""


def _record(item: str, action: str, reason: str, *, file: str, image_id: Any = None,
            annotation_id: Any = None) -> dict[str, Any]:
    return {"item": item, "action": action, "reason": reason, "file": file,
            "image_id": image_id, "annotation_id": annotation_id}


def empty_counts() -> Counter:
    """Counter with every key :func:`validate_dataset` reports, at zero."""
    keys = [f"{kind}_{what}" for kind in ("images", "annotations")
            for what in ("input", "accepted", "repaired", "rejected")]
    return Counter({k: 0 for k in keys + ["annotations_crowd", "images_negative"]})


@dataclass
class ImageEntry:
    """One image of the JSON with the annotations that point at it (file order)."""

    image_id: int
    file_name: str
    width: int | None  # as in the JSON (None when missing or invalid)
    height: int | None
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class JsonValidation:
    """What the JSON alone tells: the class map, usable images, and JSON-level rejects."""

    annotations_path: str
    categories: CategoryMap
    entries: list[ImageEntry]
    rejects: list[dict[str, Any]]
    counts: Counter
    info: dict[str, Any]


def _as_int_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _positive_int(value: Any) -> int | None:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def validate_coco_json(annotations: str | Path | dict[str, Any], *, source: str | None = None) -> JsonValidation:
    """Check a COCO annotation file (path or parsed dict) without opening images.

    Rejects: images without an id or file name and duplicate image ids (later copies); annotations
    with duplicate ids (later copies), pointing at missing images, with unknown category ids,
    malformed / NaN / infinite boxes, or zero or negative width or height. Boxes outside the image
    are decided by :func:`validate_entry`, which knows the real size. ``ValueError`` (naming the
    file) for a file that is not COCO at all or has no usable categories.
    """
    if isinstance(annotations, dict):
        data, path = annotations, source or "<annotations>"
    else:
        path = str(annotations)
        data = load_coco_json(annotations)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: {key!r} must be a list")
    try:
        cats = [c for c in data["categories"] if _as_int_id(c.get("id")) is not None]
        categories = CategoryMap.from_coco([{**c, "id": _as_int_id(c["id"])} for c in cats])
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: unusable categories ({exc})") from None

    counts = empty_counts()
    rejects: list[dict[str, Any]] = []
    entries: dict[int, ImageEntry] = {}
    for index, im in enumerate(data["images"]):
        counts["images_input"] += 1
        image_id = _as_int_id(im.get("id")) if isinstance(im, dict) else None
        file_name = im.get("file_name") if isinstance(im, dict) else None
        if image_id is None:
            reason = f"image #{index} has no integer id"
        elif not isinstance(file_name, str) or not file_name:
            reason = f"image {image_id} has no file_name"
        elif image_id in entries:
            reason = f"duplicate image id {image_id} (kept the first, file {entries[image_id].file_name})"
        else:
            entries[image_id] = ImageEntry(image_id, file_name, _positive_int(im.get("width")),
                                           _positive_int(im.get("height")))
            continue
        counts["images_rejected"] += 1
        rejects.append(_record("image", "rejected", reason, file=str(file_name or path), image_id=image_id))

    seen_ann: set[int] = set()
    for index, ann in enumerate(data["annotations"]):
        counts["annotations_input"] += 1
        ann_id = _as_int_id(ann.get("id")) if isinstance(ann, dict) else None
        image_id = _as_int_id(ann.get("image_id")) if isinstance(ann, dict) else None
        reason = _annotation_json_problem(ann, index, ann_id, image_id, seen_ann, entries, categories)
        if ann_id is not None:
            seen_ann.add(ann_id)
        if reason is None:
            entries[image_id].annotations.append(ann)
            continue
        counts["annotations_rejected"] += 1
        file = entries[image_id].file_name if image_id in entries else path
        rejects.append(_record("annotation", "rejected", reason, file=file, image_id=image_id,
                               annotation_id=ann_id))
    info = {k: data[k] for k in ("info", "licenses") if k in data}
    info["categories"] = data["categories"]
    return JsonValidation(path, categories, list(entries.values()), rejects, counts, info)


def _annotation_json_problem(ann: Any, index: int, ann_id: int | None, image_id: int | None,
                             seen: set[int], entries: dict[int, ImageEntry],
                             categories: CategoryMap) -> str | None:
    """Why an annotation is rejected on its JSON alone, or ``None``."""
    if not isinstance(ann, dict):
        return f"annotation #{index} is not an object"
    if ann_id is None:
        return f"annotation #{index} has no integer id"
    if ann_id in seen:
        return f"duplicate annotation id {ann_id} (kept the first)"
    if image_id is None or image_id not in entries:
        return f"annotation {ann_id} points at missing image {ann.get('image_id')!r}"
    cat = _as_int_id(ann.get("category_id"))
    if cat is None or cat not in categories:
        return (f"annotation {ann_id} has unknown category id {ann.get('category_id')!r} "
                f"(known: {list(categories.category_ids)})")
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"annotation {ann_id} bbox is not [x, y, w, h]: {bbox!r}"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return f"annotation {ann_id} bbox has non-numbers: {bbox!r}"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"annotation {ann_id} bbox has NaN or infinite values: {bbox!r}"
    if w <= 0 or h <= 0:
        return f"annotation {ann_id} bbox has zero or negative size w={w} h={h}"
    return None


def decode_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an image file as BGR uint8 ``[H, W, 3]`` with EXIF orientation applied.

    Returns the image and the repairs made (grayscale/RGBA/palette/16-bit converted, EXIF rotated).
    ``ImageRejected`` for missing, zero-byte, unreadable or truncated files.
    """
    from PIL import Image, ImageOps

    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError:
        raise ImageRejected("image file is missing") from None
    if size == 0:
        raise ImageRejected("image file is empty (0 bytes)")
    repairs: list[str] = []
    try:
        with Image.open(path) as img:
            img.load()  # raises on truncated data
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
                repairs.append(f"EXIF orientation {orientation} applied")
            mode = img.mode
            if mode in SIXTEEN_BIT_MODES:
                arr = np.asarray(img).astype(np.float64)  # [H, W] 0..65535
                gray = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
                repairs.append(f"16-bit image (mode {mode}) converted to 8-bit")
            else:
                if mode != "RGB":
                    kind = {"L": "grayscale", "RGBA": "RGBA", "LA": "grayscale+alpha", "P": "palette",
                            "PA": "palette+alpha", "CMYK": "CMYK", "1": "1-bit"}.get(mode, f"mode {mode}")
                    repairs.append(f"{kind} image converted to 3-channel colour")
                    if mode in ("P", "PA"):
                        img = img.convert("RGBA")
                rgb = np.asarray(img.convert("RGB"))
    except ImageRejected:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageRejected(f"image file is unreadable or truncated ({type(exc).__name__}: {exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageRejected(f"image has no pixels (shape {rgb.shape})")
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), repairs


@dataclass
class EntryResult:
    """One validated image: pixels, training targets in original pixels, clean COCO records."""

    image_id: int
    image: np.ndarray | None  # [H, W, 3] uint8 BGR; None when rejected
    boxes: np.ndarray  # [N, 4] float32 x1 y1 x2 y2 original pixels (no crowd)
    classes: np.ndarray  # [N] int64 contiguous
    clean_image: dict[str, Any] | None
    clean_annotations: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    counts: Counter


def validate_entry(entry: ImageEntry, images_dir: str | Path, categories: CategoryMap) -> EntryResult:
    """Open one image and decide it and each of its annotations.

    Boxes partly outside the image are clipped (repaired), wholly outside rejected. ``iscrowd``
    annotations are accepted or repaired like any other (and counted once more, as
    ``annotations_crowd``), kept in the clean annotations with ``iscrowd=1`` so that pycocotools
    ignores detections on them, and left out of the training boxes, as mmdetection does. The official
    ctdet loader trains on crowd boxes like any other box.
    """
    counts = Counter()
    rejects: list[dict[str, Any]] = []
    no_boxes = np.zeros((0, 4), np.float32)
    no_classes = np.zeros((0,), np.int64)
    try:
        image, repairs = decode_image(Path(images_dir) / entry.file_name)
    except ImageRejected as exc:
        counts["images_rejected"] += 1
        rejects.append(_record("image", "rejected", str(exc), file=entry.file_name, image_id=entry.image_id))
        for ann in entry.annotations:
            counts["annotations_rejected"] += 1
            rejects.append(_record("annotation", "rejected", f"its image was rejected ({exc})",
                                   file=entry.file_name, image_id=entry.image_id, annotation_id=ann["id"]))
        return EntryResult(entry.image_id, None, no_boxes, no_classes, None, [], rejects, counts)

    height, width = image.shape[:2]
    if (entry.width, entry.height) != (width, height):
        repairs.append(f"size in JSON {entry.width}x{entry.height} disagrees with the file "
                       f"{width}x{height}; JSON corrected")
    boxes, classes, clean_anns = [], [], []
    for ann in entry.annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        ann_id = _as_int_id(ann["id"])
        if x2 <= x1 or y2 <= y1:
            counts["annotations_rejected"] += 1
            rejects.append(_record("annotation", "rejected",
                                   f"bbox {[x, y, w, h]} lies wholly outside the {width}x{height} image",
                                   file=entry.file_name, image_id=entry.image_id, annotation_id=ann_id))
            continue
        clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
        if clipped:
            counts["annotations_repaired"] += 1
            rejects.append(_record("annotation", "repaired",
                                   f"bbox {[x, y, w, h]} partly outside the {width}x{height} image; clipped",
                                   file=entry.file_name, image_id=entry.image_id, annotation_id=ann_id))
        else:
            counts["annotations_accepted"] += 1
        crowd = bool(ann.get("iscrowd", 0))
        bbox = [x1, y1, x2 - x1, y2 - y1]
        area = float(ann["area"]) if not clipped and isinstance(ann.get("area"), (int, float)) else bbox[2] * bbox[3]
        clean_anns.append({"id": ann_id, "image_id": entry.image_id,
                           "category_id": _as_int_id(ann["category_id"]), "bbox": bbox,
                           "area": area, "iscrowd": int(crowd)})
        if crowd:
            counts["annotations_crowd"] += 1
            continue
        boxes.append([x1, y1, x2, y2])
        classes.append(categories.to_index(_as_int_id(ann["category_id"])))
    if repairs:
        counts["images_repaired"] += 1
        rejects.append(_record("image", "repaired", "; ".join(repairs), file=entry.file_name,
                               image_id=entry.image_id))
    else:
        counts["images_accepted"] += 1
    if not boxes:
        counts["images_negative"] += 1
    clean_image = {"id": entry.image_id, "file_name": entry.file_name, "width": width, "height": height}
    return EntryResult(entry.image_id, image,
                       np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64),
                       clean_image, clean_anns, rejects, counts)


@dataclass
class DatasetValidation:
    """The whole verdict on a dataset (see :func:`validate_dataset`)."""

    json: JsonValidation
    results: list[EntryResult]
    rejects: list[dict[str, Any]]
    counts: Counter


def check_counts(counts: Counter, source: str) -> None:
    """Assert the bookkeeping adds up and that something survived; ``ValueError`` otherwise."""
    for kind in ("images", "annotations"):
        total = counts[f"{kind}_accepted"] + counts[f"{kind}_repaired"] + counts[f"{kind}_rejected"]
        if total != counts[f"{kind}_input"]:
            raise RuntimeError(f"{source}: {kind} counts do not add up: {dict(counts)}")
    if counts["images_accepted"] + counts["images_repaired"] == 0:
        raise ValueError(f"{source}: every one of the {counts['images_input']} images was rejected "
                         f"(see {'rejects.jsonl'} for the reasons); nothing to precompute")


def validate_dataset(images_dir: str | Path, annotations: str | Path) -> DatasetValidation:
    """Validate a dataset serially (both stages); raises if every image is rejected."""
    checked = validate_coco_json(annotations)
    results = [validate_entry(e, images_dir, checked.categories) for e in checked.entries]
    counts = Counter(checked.counts)
    rejects = list(checked.rejects)
    for r in results:
        counts.update(r.counts)
        rejects.extend(r.rejects)
    check_counts(counts, str(annotations))
    return DatasetValidation(checked, results, rejects, counts)
