"""Shard schema, precompute settings and the manifest format.

``SCHEMA_VERSION`` changes whenever the layout of a shard row or of ``manifest.json`` changes; the
settings hash changes whenever a setting that changes the stored data changes. The reader refuses
shards whose version or hash it does not know (:func:`check_manifest`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import pyarrow as pa

from centernet.targets import RADIUS_VARIANTS
from centernet.transforms import check_input_size

SCHEMA_VERSION = 2  # 2: no colour augmentation in stored images (it runs on the training device)
MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.jsonl"
CLEAN_ANNOTATIONS_NAME = "annotations.clean.json"
STATS_PNG_NAME = "stats.png"
SHARD_PATTERN = "part-{:05d}.arrow"
IMAGE_FORMATS = ("raw", "jpg", "png")  # raw: uint8 BGR [S, S, 3] bytes, zstd by Arrow


@dataclass(frozen=True)
class PrecomputeSettings:
    """Every setting that changes the stored samples (all of them enter :attr:`settings_hash`).

    ``input_size``: side of the square network input; the output map is ``input_size // down_ratio``.
    ``augment``: official geometric training augmentation (random scale/shift crop, flip);
    ``False`` stores the plain letterboxed image once (validation data). Stored images never carry
    colour augmentation: the official one runs on training batches on the device
    (``centernet.color.ColorAugment``), so it is no setting of the data. ``views``: augmented copies
    per image (1 without augmentation). ``image_format``/``jpeg_quality``: how images are stored:
    ``"raw"`` (uint8 BGR pixels, compressed by Arrow's zstd; no decoding at read time, the fastest
    reader), ``"jpg"`` (smallest on photographs, lossy) or ``"png"`` (lossless).
    """

    input_size: int = 512
    down_ratio: int = 4
    radius_variant: str = "official"
    min_overlap: float = 0.7
    max_objs: int = 128
    augment: bool = True
    views: int = 1
    seed: int = 0
    scale_range: tuple[float, float] = (0.6, 1.4)
    flip_prob: float = 0.5
    image_format: str = "raw"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        check_input_size(self.input_size)
        if self.down_ratio <= 0 or self.input_size % self.down_ratio:
            raise ValueError(f"down_ratio {self.down_ratio!r} must divide input_size {self.input_size}")
        if self.radius_variant not in RADIUS_VARIANTS:
            raise ValueError(f"radius_variant must be one of {RADIUS_VARIANTS}, got {self.radius_variant!r}")
        if not 0.0 < self.min_overlap < 1.0:
            raise ValueError(f"min_overlap must be in (0, 1), got {self.min_overlap!r}")
        if self.max_objs < 1:
            raise ValueError(f"max_objs must be >= 1, got {self.max_objs!r}")
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views!r}")
        if not self.augment and self.views != 1:
            raise ValueError(f"views={self.views} needs augmentation; without it each image is stored once")
        lo, hi = self.scale_range
        if not 0 < lo < hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low < high, got {self.scale_range!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        object.__setattr__(self, "scale_range", (float(lo), float(hi)))

    @property
    def output_size(self) -> int:
        return self.input_size // self.down_ratio

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecomputeSettings:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown precompute settings {unknown}")
        data = dict(data)
        if "scale_range" in data:
            data["scale_range"] = tuple(data["scale_range"])
        return cls(**data)

    @property
    def settings_hash(self) -> str:
        """sha256 (16 hex digits) of the schema version and every setting."""
        payload = json.dumps({"schema_version": SCHEMA_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def shard_schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    """Arrow schema of one shard row (one sample = one image view).

    ``hm_index``/``hm_value``: nonzero pixels of the ``[C, H, W]`` heatmap, flat C-order index
    (ascending) and exact float32 value. ``boxes``: ``[N*4]`` x1 y1 x2 y2 in output pixels, exactly
    as passed to ``encode``; ``classes`` ``[N]``. ``wh``/``reg`` ``[K*2]``, ``ind``/``mask`` ``[K]`` as
    ``encode`` returns them. ``affine``: ``[6]`` row-major ``[2, 3]`` output pixels -> original pixels.
    """
    schema = pa.schema([
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("view", pa.int32(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("affine", pa.list_(pa.float64(), 6), nullable=False),
        pa.field("boxes", pa.list_(pa.float32()), nullable=False),
        pa.field("classes", pa.list_(pa.int32()), nullable=False),
        pa.field("hm_index", pa.list_(pa.int32()), nullable=False),
        pa.field("hm_value", pa.list_(pa.float32()), nullable=False),
        pa.field("wh", pa.list_(pa.float32()), nullable=False),
        pa.field("reg", pa.list_(pa.float32()), nullable=False),
        pa.field("ind", pa.list_(pa.int64()), nullable=False),
        pa.field("mask", pa.list_(pa.uint8()), nullable=False),
    ])
    return schema.with_metadata(metadata or {})


def rebuild_hint(manifest: dict[str, Any] | None, shard_dir: str) -> str:
    """The command that rebuilds ``shard_dir`` with this code."""
    src = (manifest or {}).get("source", {})
    images = src.get("images_dir", "IMAGES_DIR")
    annotations = src.get("annotations", "ANNOTATIONS.json")
    return (f"rebuild it with this version of the code: `centernet precompute --images {images} "
            f"--annotations {annotations} --out {shard_dir}` (plus the options you used)")


def check_manifest(manifest: dict[str, Any], shard_dir: str) -> PrecomputeSettings:
    """Refuse a manifest whose schema version or settings hash this code does not know."""
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{shard_dir}: shards have schema version {version!r} but this reader knows version "
            f"{SCHEMA_VERSION}; {rebuild_hint(manifest, shard_dir)}"
        )
    try:
        settings = PrecomputeSettings.from_dict(manifest["settings"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{shard_dir}: manifest settings are not understood ({exc}); {rebuild_hint(manifest, shard_dir)}"
        ) from None
    if settings.settings_hash != manifest.get("settings_hash"):
        raise ValueError(
            f"{shard_dir}: settings hash {manifest.get('settings_hash')!r} is unknown to this reader "
            f"(it computes {settings.settings_hash!r} for the stored settings); "
            f"{rebuild_hint(manifest, shard_dir)}"
        )
    return settings
