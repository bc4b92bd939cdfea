"""encode -> perfect head outputs -> decode -> back to original pixels -> COCO AP = 1.0.

Exercises the whole target/decoding/evaluation chain, including the letterbox affine, its inverse
and the category-id mapping (ids 2, 7, 90), on images of several shapes, with boxes clipped to the
image (this project's evaluation) and unclipped (the official post-processing).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from centernet.decode import boxes_to_original, decode, to_coco_results
from centernet.evaluate import evaluate_coco
from centernet.heatmap import dense_heatmap
from centernet.sample import SampleConfig, make_sample


def _perfect_outputs(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Head outputs that a perfect model would give: +20 logits at centers, exact wh/reg there."""
    hm = torch.from_numpy(dense_heatmap(sample))  # [C, H, W]
    logits = torch.where(hm == 1.0, torch.tensor(20.0), torch.tensor(-20.0))[None]  # [1, C, H, W]
    _, h, w = hm.shape
    wh = torch.zeros(1, 2, h * w)
    reg = torch.zeros(1, 2, h * w)
    m = torch.from_numpy(sample["mask"]).bool()
    ind = torch.from_numpy(sample["ind"])[m]
    wh[0, :, ind] = torch.from_numpy(sample["wh"])[m].T
    reg[0, :, ind] = torch.from_numpy(sample["reg"])[m].T
    return {"hm": logits, "wh": wh.reshape(1, 2, h, w), "reg": reg.reshape(1, 2, h, w)}


def _gt(rng: np.random.Generator) -> dict:
    images, annotations = [], []
    for image_id in (3, 8, 21, 40):
        h, w = (int(v) for v in rng.integers(120, 400, size=2))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        placed: list[list[float]] = []
        while len(placed) < 6:
            bw, bh = rng.uniform(16, 60, size=2)
            x, y = rng.uniform(4, w - bw - 4), rng.uniform(4, h - bh - 4)
            if any(x < p[0] + p[2] + 8 and p[0] < x + bw + 8 and y < p[1] + p[3] + 8 and p[1] < y + bh + 8
                   for p in placed):
                continue  # keep centres apart so no two objects share an output pixel
            placed.append([x, y, bw, bh])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.choice([2, 7, 90])), "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": 0})
    cats = [{"id": i, "name": n} for i, n in ((2, "a"), (7, "b"), (90, "c"))]
    return {"images": images, "annotations": annotations, "categories": cats}


@pytest.mark.parametrize("clip", [True, False], ids=["clipped", "unclipped-official"])
@pytest.mark.parametrize("input_size", [(512, 512), (384, 512)])
def test_perfect_outputs_give_ap_one(input_size, clip):
    from centernet.data import CategoryMap, xywh_to_xyxy

    gt = _gt(np.random.default_rng(4))
    cats = CategoryMap.from_coco(gt["categories"])
    config = SampleConfig(input_size=input_size)
    results = []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        boxes = xywh_to_xyxy(np.array([a["bbox"] for a in anns]))
        classes = np.array([cats.to_index(a["category_id"]) for a in anns])
        pixels = np.zeros((image["height"], image["width"], 3), np.uint8)
        sample = make_sample(pixels, boxes, classes, cats.num_classes, config)
        out = _perfect_outputs(sample)
        dets = decode(out["hm"], out["wh"], out["reg"], k=100)[0].numpy()
        image_hw = (image["height"], image["width"]) if clip else None  # None: the official post-processing
        mapped = boxes_to_original(dets, sample["affine"].astype(np.float64), image_hw)
        results += to_coco_results(mapped, image["id"], cats)
    metrics = evaluate_coco(gt, results)
    assert metrics.ap == pytest.approx(1.0)
    assert metrics.ap50 == pytest.approx(1.0) and metrics.ap75 == pytest.approx(1.0)
    assert set(metrics.per_class) == {"a", "b", "c"} and min(metrics.per_class.values()) == pytest.approx(1.0)


def test_wrong_category_mapping_is_caught():
    gt = _gt(np.random.default_rng(5))
    with pytest.raises(ValueError, match="not mapped back"):
        evaluate_coco(gt, [{"image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}])
    assert evaluate_coco(gt, []).ap == 0.0
