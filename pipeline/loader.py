"""Training and validation data for one DDP rank: what a data directory holds, and its loader.

A data directory is either precomputed shards (``manifest.json``, local path or URI such as
``s3://bucket/shards/train``) read by :class:`pipeline.reader.ShardDataset`, or a COCO directory
(``images/`` + ``annotations.json``) made into samples in process by
:class:`centernet.dataset.CocoSampleDataset`. Both are split among ranks and loader workers by the
one rule of :mod:`pipeline.split`, yield the same sample form and are batched by the same
``centernet.batch.collate_samples`` (uint8 images, sparse heatmaps: the dense work is done on the
training device by ``centernet.engine.move_batch``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.schema import MANIFEST_NAME
from pipeline.shards import exists, join, read_bytes, resolve
from pipeline.split import balanced_range


@dataclass(frozen=True)
class DataInfo:
    """What a data directory holds: precomputed shards (``manifest.json``) or a COCO directory
    (``images/`` + ``annotations.json``, made into samples in process)."""

    path: str  # absolute local path, or the URI as given
    kind: str  # "shards" | "coco"
    classes: dict[str, Any]
    num_samples: int
    data_hash: str
    input_size: int
    annotations: str | None  # COCO ground truth for evaluation
    manifest: str | None
    views: int = 1  # augmented copies of each image in training shards (one per epoch is trained)

    @property
    def images_per_epoch(self) -> int:
        """Samples a training epoch reads: one copy of each image (``num_samples / views``)."""
        return self.num_samples // self.views


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe_data(path: str | Path, input_size: int = 512) -> DataInfo:
    """Inspect a data directory; ``ValueError`` saying how to make one when it is neither kind."""
    text = str(path)
    fs, base = resolve(text)
    where = text if "://" in text else base
    manifest_path = join(base, MANIFEST_NAME)
    if exists(fs, manifest_path):
        from pipeline.reader import read_manifest

        m = read_manifest(where)
        ann = join(where, Path(m["clean_annotations"]).name) if m.get("clean_annotations") else None
        size = m.get("input_size", input_size)
        if isinstance(size, (list, tuple)):
            size = size[0]
        return DataInfo(where, "shards", dict(m["classes"]), int(m.get("num_samples", 0)),
                        _short_hash(read_bytes(fs, manifest_path)), int(size),
                        ann if ann and exists(fs, resolve(ann)[1]) else None, join(where, MANIFEST_NAME),
                        views=int(m.get("settings", {}).get("views", 1)))
    local = Path(base)
    ann_file = local / "annotations.json"
    if "://" not in text and ann_file.is_file() and (local / "images").is_dir():
        from centernet.data import read_coco

        coco = read_coco(ann_file)
        return DataInfo(str(local), "coco", coco.categories.to_dict(), len(coco.images),
                        _short_hash(ann_file.read_bytes()), int(input_size), str(ann_file), None)
    if "://" not in text and not local.exists():
        where = "" if str(local) == text else f" (resolved to {local})"
        raise ValueError(f"{text}: no such directory{where}")
    raise ValueError(
        f"{text}: not a data directory: expected a shard directory with manifest.json (make one with "
        "`centernet precompute --images DIR --annotations FILE --out DIR`) or a COCO directory with "
        "images/ and annotations.json"
    )


class RankSampler:
    """This rank's balanced, contiguous range (:func:`pipeline.split.balanced_range`) of a
    per-epoch permutation shared by every rank: every index exactly once per epoch."""

    def __init__(self, n: int, rank: int, world_size: int, shuffle: bool, seed: int):
        self.n, self.rank, self.world_size, self.shuffle, self.seed = n, rank, world_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        import numpy as np

        order = (np.random.default_rng((self.seed, self.epoch)).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        start, stop = balanced_range(self.n, self.world_size, self.rank)
        return iter(order[start:stop].tolist())

    def __len__(self) -> int:
        start, stop = balanced_range(self.n, self.world_size, self.rank)
        return stop - start


@dataclass
class RankLoader:
    """A DataLoader over one rank's share, with ``set_epoch`` forwarded to what reshuffles.

    ``color``: the colour augmentation of the training batches (:class:`centernet.color.ColorAugment`,
    told the epoch by ``set_epoch``), ``None`` for validation data or when switched off; pass it on
    as ``train_epoch(..., color=loader.color)``.
    """

    loader: Any
    epochal: list[Any]
    color: Any = None

    def set_epoch(self, epoch: int) -> None:
        for obj in self.epochal:
            obj.set_epoch(epoch)

    def __iter__(self):
        return iter(self.loader)


def make_loader(
    info: DataInfo,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    train: bool,
    seed: int = 0,
    loader_workers: int = 0,
    pin_memory: bool = False,
    color_aug: bool = True,
) -> RankLoader:
    """A loader over rank ``rank``'s share of ``info`` (every sample on exactly one rank).

    Batches are :func:`centernet.batch.collate_samples`'s (set ``pin_memory`` for a CUDA device).
    With ``train`` and ``color_aug`` the result carries a :class:`centernet.color.ColorAugment`
    (per-sample parameters from ``seed``, the epoch, image id and view) as ``.color``; otherwise
    ``.color`` is ``None``.
    """
    from torch.utils.data import DataLoader

    from centernet.batch import collate_samples
    from centernet.color import ColorAugment

    common: dict[str, Any] = dict(batch_size=batch_size, num_workers=loader_workers, pin_memory=pin_memory,
                                  drop_last=False, collate_fn=collate_samples)
    if loader_workers > 0:
        common["prefetch_factor"] = 4
    color = ColorAugment(seed) if train and color_aug else None
    extra = [color] if color is not None else []
    if info.kind == "shards":
        from pipeline.reader import ShardDataset

        ds = ShardDataset(info.path, rank=rank, world_size=world_size, shuffle=train, seed=seed,
                          one_view_per_epoch=train)
        return RankLoader(DataLoader(ds, **common), [ds, *extra], color)
    from centernet.dataset import CocoSampleDataset
    from centernet.sample import SampleConfig

    ds = CocoSampleDataset(Path(info.path) / "images", info.annotations,
                           SampleConfig(input_size=(info.input_size, info.input_size)), augment=train,
                           seed=seed)
    sampler = RankSampler(len(ds), rank, world_size, shuffle=train, seed=seed)
    return RankLoader(DataLoader(ds, sampler=sampler, **common), [ds, sampler, *extra], color)


def in_lockstep(loader: Iterable[Mapping[str, Any]], world_size: int,
                seen: list[int] | None = None) -> Iterator[Any]:
    """Yield batches while *every* rank still has one (ranks may hold unequal shares; DDP needs
    the same number of steps everywhere). Image ids yielded are appended to ``seen``."""
    import torch
    import torch.distributed as dist

    sync = world_size > 1 and dist.is_available() and dist.is_initialized()
    it = iter(loader)
    while True:
        batch = next(it, None)
        if sync:
            flag = torch.tensor([0 if batch is None else 1], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # gloo group, CPU tensor
            if int(flag) == 0:
                return
        elif batch is None:
            return
        if seen is not None and "image_id" in batch:
            seen.extend(int(i) for i in batch["image_id"])
        yield batch


def steps_per_epoch(num_samples: int, world_size: int, batch_size: int, max_steps: int | None = None) -> int:
    """Optimisation steps of one epoch when ranks train in lockstep: the smallest rank's batches
    (shares differ by at most one sample), capped by ``max_steps``."""
    smallest = num_samples // world_size
    steps = -(-smallest // batch_size)
    return min(steps, max_steps) if max_steps is not None else steps
