"""Shard schema, precompute settings and the manifest format.

``SCHEMA_VERSION`` changes whenever the layout of a shard row or of ``manifest.json`` changes; the
settings hash changes whenever a setting that changes the stored data changes. The reader refuses
shards whose version or hash it does not know (:func:`check_manifest`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa

from centernet.config_fields import from_mapping, setting, to_plain
from centernet.sample import SampleConfig

SCHEMA_VERSION = 3  # 2: no colour augmentation in stored images; 3: settings nest the sample config
MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.jsonl"
CLEAN_ANNOTATIONS_NAME = "annotations.clean.json"
STATS_PNG_NAME = "stats.png"
SHARD_PATTERN = "part-{:05d}.arrow"
IMAGE_FORMATS = ("raw", "jpg", "png")  # raw: uint8 BGR [S, S, 3] bytes, zstd by Arrow


@dataclass(frozen=True)
class PrecomputeSettings:
    """Every setting that changes the stored samples (all of them enter :attr:`settings_hash`).

    ``sample``: how a sample is made (:class:`centernet.sample.SampleConfig`: input size, encoding,
    geometric augmentation), the same settings the in-process path uses; shards are square
    (``input_size`` one side). ``augment``: official geometric training augmentation (random
    scale/shift crop, flip); off stores the plain letterboxed image once (validation data). Stored
    images never carry colour augmentation: the official one runs on training batches on the
    device (``centernet.color.ColorAugment``). ``views``: augmented copies per image
    (training reads one per epoch: ``pipeline.reader.ShardDataset(one_view_per_epoch=True)``).
    ``image_format``/``jpeg_quality``: how images are stored: ``"raw"`` (uint8 BGR pixels,
    compressed by Arrow's zstd; no decoding at read time, the fastest reader), ``"jpg"`` (smallest
    on photographs, lossy) or ``"png"`` (lossless). Build with flat keyword arguments through
    :meth:`of`, e.g. ``PrecomputeSettings.of(input_size=128, augment=False)``.
    """

    sample: SampleConfig = setting(SampleConfig(), help="How samples are made.")
    augment: bool = setting(True, help="Official geometric augmentation (training data); --no-augment stores "
                                       "the plain letterboxed image once (validation data).",
                            flag="--augment/--no-augment")
    views: int = setting(1, help="Augmented copies per image (training data); training reads one copy of "
                                 "each image per epoch, the next copy the next epoch.")
    seed: int = setting(0, help="Augmentation seed; a (seed, image id, view) always gives the same view.")
    image_format: str = setting("raw", help="How images are stored: raw uint8 pixels (zstd; fastest reader), "
                                            "jpg (smallest on photos, lossy) or png (lossless).",
                                choices=IMAGE_FORMATS)
    jpeg_quality: int = setting(95, help="JPEG quality with --image-format jpg.")

    def __post_init__(self) -> None:
        h, w = self.sample.input_size
        if h != w:
            raise ValueError(f"input_size: shards are square, got {h}x{w}")
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views!r}")
        if not self.augment and self.views != 1:
            raise ValueError(f"views={self.views} needs augmentation; without it each image is stored once")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")

    @classmethod
    def of(cls, **values: Any) -> PrecomputeSettings:
        """From flat keyword arguments: the sample fields (``input_size``, ``max_objs``, ...) and
        this class's own."""
        sample_names = {f.name for f in fields(SampleConfig)}
        sample = SampleConfig(**{k: v for k, v in values.items() if k in sample_names})
        return cls(sample=sample, **{k: v for k, v in values.items() if k not in sample_names})

    # The sample settings, read as the shards' (square) geometry.
    @property
    def input_size(self) -> int:
        return self.sample.input_size[0]

    @property
    def output_size(self) -> int:
        return self.sample.output_size[0]

    @property
    def max_objs(self) -> int:
        return self.sample.max_objs

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecomputeSettings:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming unknown keys or wrong types."""
        return from_mapping(cls, data, source="precompute settings")

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
