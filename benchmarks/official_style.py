"""An official-style CenterNet training loader, the baseline of the data-path benchmarks.

Per sample, as the official ``ctdet`` ``__getitem__``: JPEG decode from disk (``cv2.imread``), the
official random scale/shift/flip affine and ``warpAffine`` (``centernet.sample.letterbox_view``),
``/ 255``, the official colour augmentation step by step in numpy
(``tests/official_reference.official_color_aug``), ``(x - mean) / std`` and the HWC -> CHW
transpose, the dense ``[C, H/4, W/4]`` heatmap and the other targets (``centernet.targets.encode``,
which is faster than the official per-object loop, so the baseline is, if anything, flattered);
batches by ``torch.utils.data.default_collate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_reference import official_color_aug  # noqa: E402

from centernet.color import EIG_VAL, EIG_VEC  # noqa: E402
from centernet.data import read_coco  # noqa: E402
from centernet.sample import letterbox_view  # noqa: E402
from centernet.targets import encode  # noqa: E402
from centernet.transforms import COCO_MEAN_BGR, COCO_STD_BGR  # noqa: E402

STEPS = ("brightness", "contrast", "saturation")


class OfficialStyleDataset(Dataset):
    """Images + COCO annotations -> the official training sample: "input" float32 ``[3, S, S]``,
    "hm" float32 ``[C, S/4, S/4]``, "wh"/"reg" ``[K, 2]``, "ind"/"mask" ``[K]``."""

    def __init__(self, images_dir: str | Path, annotations: str | Path, input_size: int = 512, seed: int = 0):
        self.images_dir = Path(images_dir)
        self.coco = read_coco(annotations)
        self.size = input_size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.coco.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.coco.images[index]
        rng = np.random.default_rng((self.seed, index))
        image = cv2.imread(str(self.images_dir / record.file_name), cv2.IMREAD_COLOR)  # [H0, W0, 3] uint8
        view, boxes, _ = letterbox_view(image, record.boxes, (self.size, self.size), 4, rng)
        inp = view.astype(np.float32) / 255.0  # [S, S, 3]
        order = rng.permutation(3)
        official_color_aug(inp, [STEPS[i] for i in order], 1.0 + rng.uniform(-0.4, 0.4, size=3),
                           rng.normal(scale=0.1, size=3), EIG_VAL, EIG_VEC)
        inp = ((inp - COCO_MEAN_BGR) / COCO_STD_BGR).transpose(2, 0, 1)  # [3, S, S]
        out = self.size // 4
        targets = encode(boxes, record.classes, self.coco.categories.num_classes, (out, out))
        return {"input": torch.from_numpy(np.ascontiguousarray(inp)),
                **{k: torch.from_numpy(v) for k, v in targets.items()}}
