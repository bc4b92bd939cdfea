"""An official-style CenterNet training loader, the baseline of the data-path benchmarks.

Per sample, as the official ``ctdet`` ``__getitem__``: JPEG decode from disk (``cv2.imread``), the
official random scale/shift/flip affine and ``warpAffine`` (``centernet.sample.letterbox_view``),
``/ 255``, the official colour augmentation step by step in numpy (:func:`color_aug_for_timing`),
``(x - mean) / std`` and the HWC -> CHW transpose, the dense ``[C, H/4, W/4]`` heatmap and the
other targets (``centernet.targets.encode``, which is faster than the official per-object loop, so
the baseline is, if anything, flattered); batches by ``torch.utils.data.default_collate``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from centernet.color import COLOR_JITTER, CONTRAST, EIG_VAL, EIG_VEC, LIGHTING_STD, SATURATION
from centernet.data import read_coco
from centernet.sample import letterbox_view
from centernet.targets import encode
from centernet.transforms import COCO_MEAN_BGR, COCO_STD_BGR


def color_aug_for_timing(image: np.ndarray, rng: np.random.Generator) -> None:
    """A re-implementation of the official colour augmentation's arithmetic, for timing only: in
    place on a float32 BGR ``[S, S, 3]`` image in [0, 1], one numpy operation per official one, with
    its own random draws (``rng``, not the official generators).

    It is not itself tested; the project's colour augmentation (``centernet.color``) is tested
    against the official code's own outputs in ``tests/unit/test_color.py`` (the fixtures of
    ``tests/fixtures/official``, as in ``tests/unit/test_official_parity.py``).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # [S, S], of the image before any step
    gray_mean = float(gray.mean())
    for op in rng.permutation(3):  # brightness, contrast, saturation in a random order
        alpha = 1.0 + rng.uniform(-COLOR_JITTER, COLOR_JITTER)
        image *= alpha
        if op == CONTRAST:
            image += (1.0 - alpha) * gray_mean
        elif op == SATURATION:
            image += (1.0 - alpha) * gray[:, :, None]
    image += EIG_VEC @ (EIG_VAL * rng.normal(scale=LIGHTING_STD, size=3))  # PCA lighting, [3] BGR


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
        color_aug_for_timing(inp, rng)
        inp = ((inp - COCO_MEAN_BGR) / COCO_STD_BGR).transpose(2, 0, 1)  # [3, S, S]
        out = self.size // 4
        targets = encode(boxes, record.classes, self.coco.categories.num_classes, (out, out))
        return {"input": torch.from_numpy(np.ascontiguousarray(inp)),
                **{k: torch.from_numpy(v) for k, v in targets.items()}}
