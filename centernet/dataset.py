"""A map-style torch ``Dataset`` over a COCO-format dataset, making samples in process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from centernet.data import CocoDataset, read_coco
from centernet.sample import SampleConfig, make_sample


class CocoSampleDataset(Dataset):
    """Images + annotations -> sample dicts of :func:`centernet.sample.make_sample` as tensors.

    Samples have the training form of :mod:`centernet.batch` (uint8 image, sparse heatmap), the
    same as ``pipeline.reader.ShardDataset``'s: batch them with
    ``DataLoader(..., collate_fn=centernet.batch.collate_samples)``. With ``augment=True`` each
    access draws a fresh random geometric augmentation from a generator seeded by (seed, epoch,
    index), so runs are reproducible; call :meth:`set_epoch` each epoch. Colour augmentation is
    applied to training batches on the device (:class:`centernet.color.ColorAugment`).
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotations: str | Path | CocoDataset,
        config: SampleConfig,
        *,
        augment: bool = False,
        seed: int = 0,
    ):
        self.images_dir = Path(images_dir)
        self.coco = annotations if isinstance(annotations, CocoDataset) else read_coco(annotations)
        self.config = config
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_classes(self) -> int:
        return self.coco.categories.num_classes

    def __len__(self) -> int:
        return len(self.coco.images)

    def load_image(self, index: int) -> np.ndarray:
        """BGR uint8 ``[H, W, 3]`` of record ``index``; ``FileNotFoundError`` naming the file."""
        record = self.coco.images[index]
        path = self.images_dir / record.file_name
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {path} (image id {record.image_id})")
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.coco.images[index]
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.augment else None
        sample = make_sample(self.load_image(index), record.boxes, record.classes, self.num_classes,
                             self.config, rng)
        out: dict[str, Any] = {k: v if k == "hm_shape" else torch.from_numpy(v) for k, v in sample.items()}
        out["image_id"] = torch.tensor(record.image_id, dtype=torch.int64)
        out["view"] = torch.tensor(0, dtype=torch.int64)  # one view of each image per epoch
        return out
