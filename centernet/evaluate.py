"""COCO box AP with pycocotools, on predictions in original coordinates and dataset category ids.

pycocotools is the reference implementation every published CenterNet number was computed with;
on the small validation splits this project evaluates during training it takes well under a second,
so the speed of faster-coco-eval would not buy anything and exact agreement matters more.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class CocoMetrics:
    """AP over IoU 0.5:0.95, at 0.5 and 0.75, by object size, and per category name."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    per_class: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Flat metric dict for logging (per-class entries as ``AP/<name>``)."""
        base = {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75,
                "APs": self.ap_small, "APm": self.ap_medium, "APl": self.ap_large}
        return {**base, **{f"AP/{name}": v for name, v in self.per_class.items()}}


def load_ground_truth(annotations: str | Path | dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` from a file path or an in-memory COCO dict (quietly)."""
    coco = COCO()
    if isinstance(annotations, dict):
        data = copy.deepcopy(annotations)
    else:
        data = json.loads(Path(annotations).read_text())
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    for i, ann in enumerate(data["annotations"]):
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
        ann.setdefault("id", i + 1)
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(
    ground_truth: COCO | str | Path | dict[str, Any],
    results: list[dict[str, Any]],
    image_ids: list[int] | None = None,
) -> CocoMetrics:
    """COCO bbox evaluation of ``results`` (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).

    ``image_ids`` restricts evaluation to those images (default: every image of the ground truth).
    No results at all gives AP 0, not an error.
    """
    gt = ground_truth if isinstance(ground_truth, COCO) else load_ground_truth(ground_truth)
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted(int(i) for i in image_ids)
    unknown = {r["category_id"] for r in results} - set(gt.getCatIds())
    if unknown:
        raise ValueError(
            f"results use category ids {sorted(unknown)} that the ground truth does not have "
            f"({sorted(gt.getCatIds())}); were contiguous class indices not mapped back?"
        )
    if not results:
        return CocoMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                           {gt.cats[c]["name"]: 0.0 for c in sorted(gt.getCatIds())})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(s)) for s in ev.stats[:6]]
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area "all", maxDets 100
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        per_class[gt.cats[cat_id]["name"]] = float(np.mean(valid)) if valid.size else 0.0
    return CocoMetrics(*stats, per_class=per_class)
