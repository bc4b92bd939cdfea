"""Stream precomputed shards into training: sample dicts, DDP/worker splitting.

One decoder of a shard row, :func:`decode_row` (numpy). :func:`iter_samples` adds owned copies and
the dense heatmap (numpy samples as ``encode`` returns them, uint8 ``[H, W, 3]`` BGR images);
:class:`ShardDataset` is the torch ``IterableDataset`` for training: a thin tensor layer over the
same decoder that yields only what is stored (uint8 images, sparse heatmaps). Batch it with
``centernet.batch.collate_samples``; ``centernet.engine.move_batch`` renders the heatmaps and
normalises the images on the training device. Both refuse shards whose schema version or settings
hash this code does not know, with the command that rebuilds them.

Splitting: each epoch the shards are put in a (seeded, per-epoch) order and their rows form one
global sequence of ``N`` samples; rank ``r`` of ``R`` takes the ``r``-th of ``R`` contiguous,
balanced ranges (sizes differ by at most one, see :func:`samples_per_rank`), and each loader
worker the same split of its rank's range. Every sample is seen exactly once per epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from centernet.data import CategoryMap
from centernet.heatmap import dense_heatmap
from pipeline.schema import MANIFEST_NAME, PrecomputeSettings, check_manifest, rebuild_hint
from pipeline.shards import (
    iter_raw_rows,
    join,
    open_shard,
    own_row,
    read_bytes,
    read_json,
    resolve,
    sha256,
    shard_metadata,
)
from pipeline.split import balanced_range, shares

DEFAULT_BUFFER_SIZE = 128


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """The validated ``manifest.json`` of a shard directory.

    Keys include ``classes`` (``CategoryMap.to_dict()``), ``input_size``, ``output_size``,
    ``num_classes``, ``num_samples``, ``settings_hash``, ``settings``, ``shards``, ``counts``,
    ``stats``, ``split``, ``source_annotations`` and ``clean_annotations`` (absolute here).
    """
    fs, base = resolve(shard_dir)
    path = join(base, MANIFEST_NAME)
    try:
        manifest = read_json(fs, path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: {shard_dir} is not a finished precompute output (a run may have been "
            f"interrupted); {rebuild_hint(None, str(shard_dir))}"
        ) from None
    check_manifest(manifest, str(shard_dir))
    manifest = dict(manifest)
    manifest["clean_annotations"] = join(base, manifest["clean_annotations"])
    return manifest


def samples_per_rank(shard_dir: str | Path | dict[str, Any], world_size: int) -> list[int]:
    """Samples each rank gets per epoch (balanced; differ by at most one).

    A DDP loop should run ``min(...) // batch_size`` steps (or pad) so ranks stay in step.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size!r}")
    manifest = shard_dir if isinstance(shard_dir, dict) else read_manifest(shard_dir)
    return shares(int(manifest["num_samples"]), world_size)


class _Shards:
    """Opened shards of one directory, checked against the manifest."""

    def __init__(self, shard_dir: str | Path, manifest: dict[str, Any], verify: bool):
        self.fs, self.base = resolve(shard_dir)
        self.shard_dir = str(shard_dir)
        self.manifest = manifest
        self.verify = verify
        self.readers: dict[int, Any] = {}

    def reader(self, index: int) -> tuple[Any, int]:
        """(record batch file reader, rows per batch) of shard ``index``."""
        if index not in self.readers:
            entry = self.manifest["shards"][index]
            path = join(self.base, entry["file"])
            if self.verify and sha256(read_bytes(self.fs, path)) != entry["sha256"]:
                raise ValueError(f"{path}: checksum differs from the manifest; "
                                 f"{rebuild_hint(self.manifest, self.shard_dir)}")
            reader = open_shard(self.fs, path)
            meta = shard_metadata(reader)
            for key in ("schema_version", "settings_hash", "num_samples"):
                want = self.manifest[key] if key != "num_samples" else entry["num_samples"]
                if meta.get(key) != want:
                    raise ValueError(f"{path}: shard {key} {meta.get(key)!r} does not match the manifest "
                                     f"({want!r}); {rebuild_hint(self.manifest, self.shard_dir)}")
            self.readers[index] = (reader, int(meta["rows_per_batch"]))
        return self.readers[index]

    def rows(self, index: int, start: int, stop: int,
             rng: random.Random | None = None) -> Iterator[dict[str, Any]]:
        """Raw rows ``start..stop-1`` of shard ``index`` (only the record batches needed are read).

        With ``rng`` the record batches are visited in random order. The shard is closed after.
        """
        reader, per_batch = self.reader(index)
        batches = list(range(start // per_batch, (stop - 1) // per_batch + 1 if stop > start else 0))
        if rng is not None:
            rng.shuffle(batches)
        for b in batches:
            batch = reader.get_batch(b)
            lo, hi = max(start - b * per_batch, 0), min(stop - b * per_batch, batch.num_rows)
            yield from iter_raw_rows(batch.slice(lo, hi - lo))
        self.readers.pop(index, None)  # each shard is read once per epoch: free it


def decode_image(data: bytes | np.ndarray, image_format: str = "jpg", size: int | None = None) -> np.ndarray:
    """Stored image -> ``[S, S, 3]`` uint8 BGR (a read-only view for ``"raw"``, else decoded).

    ``data``: the stored bytes (uint8 array or ``bytes``); ``size`` (S) is needed for ``"raw"``.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if image_format == "raw":
        if size is None or buf.size != size * size * 3:
            raise ValueError(f"stored raw image has {buf.size} bytes, expected {size}x{size}x3")
        return buf.reshape(size, size, 3)
    import cv2

    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"stored {image_format} image bytes do not decode")
    return image


def decode_row(raw: dict[str, Any], settings: PrecomputeSettings, num_classes: int) -> dict[str, Any]:
    """A raw shard row -> its sample as numpy (the one row decoder; views into ``raw`` where possible).

    "image" ``[S, S, 3]`` uint8 BGR; the sparse heatmap "hm_index" ``[P]`` int32 (flat C-order index
    into ``[C, S/4, S/4]``), "hm_value" ``[P]`` float32, "hm_shape" (C, S/4, S/4); "wh"/"reg" ``[K, 2]``
    float32, "ind" ``[K]`` int64, "mask" ``[K]`` uint8; "boxes" ``[N, 4]`` float32 output pixels and
    "classes" ``[N]`` int32 the targets were made from; "image_id", "view"; "affine" ``[2, 3]``
    float64 (output-map px -> original px). Arrays may be read-only views of ``raw``: copy to keep.
    """
    output_size, k = settings.output_size, settings.max_objs
    return {
        "image": decode_image(raw["image"], settings.image_format, settings.input_size),
        "hm_index": raw["hm_index"], "hm_value": raw["hm_value"],
        "hm_shape": (int(num_classes), output_size, output_size),
        "wh": raw["wh"].reshape(k, 2), "reg": raw["reg"].reshape(k, 2),
        "ind": raw["ind"], "mask": raw["mask"],
        "boxes": raw["boxes"].reshape(-1, 4), "classes": raw["classes"],
        "image_id": int(raw["image_id"]), "view": int(raw["view"]),
        "affine": np.asarray(raw["affine"]).reshape(2, 3),
    }


def numpy_sample(row: dict[str, Any]) -> dict[str, Any]:
    """A decoded row (:func:`decode_row`) -> the documented numpy sample: owned copies, dense "hm"
    ``[C, H, W]`` float32 (rendered by :func:`centernet.heatmap.dense_heatmap`), "classes" int64,
    "affine" float64."""
    sample = {k: np.array(v) for k, v in row.items() if k not in ("hm_index", "hm_value", "hm_shape")}
    sample.update(image_id=row["image_id"], view=row["view"], hm=dense_heatmap(row),
                  classes=row["classes"].astype(np.int64), affine=np.array(row["affine"], dtype=np.float64))
    return sample


def iter_samples(shard_dir: str | Path, *, verify: bool = False) -> Iterator[dict[str, Any]]:
    """Every sample of a shard directory in stored order, as numpy (see :func:`numpy_sample`).

    ``verify=True`` also checks each shard's sha256 against the manifest.
    """
    manifest = read_manifest(shard_dir)
    settings = PrecomputeSettings.from_dict(manifest["settings"])
    shards = _Shards(shard_dir, manifest, verify)
    for index, entry in enumerate(manifest["shards"]):
        for raw in shards.rows(index, 0, entry["num_samples"]):
            yield numpy_sample(decode_row(raw, settings, manifest["num_classes"]))


def _default_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


try:  # torch is a dependency of the project, but keep iter_samples usable without it
    from torch.utils.data import IterableDataset as _IterableDataset
except ImportError:  # pragma: no cover
    _IterableDataset = object  # type: ignore[assignment,misc]


class ShardDataset(_IterableDataset):
    """Training samples of a shard directory as torch tensors, split over DDP ranks and workers.

    Yields what is stored (the training form of :mod:`centernet.batch`; batch it with
    ``DataLoader(ds, batch_size=B, collate_fn=centernet.batch.collate_samples)``): "image" uint8
    ``[3, S, S]`` BGR (a channels-last view of the stored ``[S, S, 3]`` pixels), the sparse heatmap
    "hm_index" int32 ``[P]``, "hm_value" float32 ``[P]`` and "hm_shape" (C, S/4, S/4), "wh"/"reg"
    float32 ``[K, 2]``, "ind" int64 ``[K]``, "mask" uint8 ``[K]``, "image_id" and "view" int64 ``[]``,
    "affine" float32 ``[2, 3]`` (output-map px -> original image px). :func:`centernet.engine.move_batch`
    renders the heatmaps and normalises the images on the training device.

    ``rank``/``world_size`` default to ``torch.distributed``'s when it is initialised. Shuffling:
    shard order and record-batch order per epoch, plus a buffer of ``buffer_size`` samples (each
    buffered sample is a copy: memory ~ ``buffer_size`` x image bytes); call :meth:`set_epoch`
    before each epoch (with ``persistent_workers=False`` the loader workers see the new epoch).

    ``one_view_per_epoch`` (training on shards of ``views`` V > 1 augmented copies per image): each
    epoch yields one copy of every image, view ``(epoch + image_id) % V``, so an epoch is one pass
    over the images and V epochs see V different augmentations of each (as a loader that augments
    afresh every epoch, up to V). Off: every stored copy, every epoch.
    """

    def __init__(self, shard_dir: str | Path, *, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, buffer_size: int = DEFAULT_BUFFER_SIZE,
                 verify: bool = False, one_view_per_epoch: bool = False):
        super().__init__()
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if rank is None:
            rank, world_size = _default_rank_world()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank={rank!r} world_size={world_size!r}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size!r}")
        self.shard_dir = str(shard_dir)
        self.manifest = read_manifest(shard_dir)
        self.settings = PrecomputeSettings.from_dict(self.manifest["settings"])
        self.categories = CategoryMap.from_dict(self.manifest["classes"])
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.seed, self.buffer_size = shuffle, int(seed), int(buffer_size)
        self.verify = verify
        # views taken in turn, one per epoch; 1: every stored row, every epoch
        self.cycle = int(self.settings.views) if one_view_per_epoch else 1
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_classes(self) -> int:
        return self.categories.num_classes

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all its loader workers); with one view per
        epoch, its rows / V (exact up to the images whose copies straddle a rank's boundary)."""
        return samples_per_rank(self.manifest, self.world_size)[self.rank] // self.cycle

    def plan(self, worker: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """(shard index, row start, row stop) segments of this rank's ``worker`` for the epoch."""
        counts = [int(s["num_samples"]) for s in self.manifest["shards"]]
        order = list(range(len(counts)))
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        r0, r1 = balanced_range(sum(counts), self.world_size, self.rank)
        w0, w1 = balanced_range(r1 - r0, num_workers, worker)
        lo, hi = r0 + w0, r0 + w1
        segments, pos = [], 0
        for index in order:
            a, b = max(lo, pos), min(hi, pos + counts[index])
            if a < b:
                segments.append((index, a - pos, b - pos))
            pos += counts[index]
        return segments

    def _raw_rows(self, worker: int, num_workers: int, rng: random.Random | None) -> Iterator[dict[str, Any]]:
        shards = _Shards(self.shard_dir, self.manifest, self.verify)
        for index, start, stop in self.plan(worker, num_workers):
            for row in shards.rows(index, start, stop, rng):
                if self.cycle == 1 or (row["view"] - self.epoch - row["image_id"]) % self.cycle == 0:
                    yield row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.shuffle:
            for raw in self._raw_rows(worker, num_workers, None):
                yield self.to_tensors(raw)
            return
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        buffer: list[dict[str, Any]] = []
        for raw in self._raw_rows(worker, num_workers, rng):
            raw = own_row(raw)  # never keep a whole record batch alive for one buffered row
            if len(buffer) < self.buffer_size:
                buffer.append(raw)
                continue
            j = rng.randrange(len(buffer))
            out, buffer[j] = buffer[j], raw
            yield self.to_tensors(out)
        rng.shuffle(buffer)
        while buffer:
            yield self.to_tensors(buffer.pop())

    def to_tensors(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A raw shard row -> the training sample: :func:`decode_row` as tensors (no copies of
        owned rows; read-only views are copied)."""
        import torch

        row = decode_row(raw, self.settings, self.num_classes)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a if a.flags.writeable else a.copy())

        return {
            "image": tensor(row["image"]).permute(2, 0, 1),  # [3, S, S] uint8, channels-last view
            "hm_index": tensor(row["hm_index"]),  # [P] int32
            "hm_value": tensor(row["hm_value"]),  # [P] float32
            "hm_shape": row["hm_shape"],
            "wh": tensor(row["wh"]),  # [K, 2] float32
            "reg": tensor(row["reg"]),  # [K, 2] float32
            "ind": tensor(row["ind"]),  # [K] int64
            "mask": tensor(row["mask"]),  # [K] uint8
            "image_id": torch.tensor(row["image_id"], dtype=torch.int64),
            "view": torch.tensor(row["view"], dtype=torch.int64),
            "affine": torch.from_numpy(row["affine"].astype(np.float32)),  # [2, 3]
        }
