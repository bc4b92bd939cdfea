"""Bytes per sample of the stored targets vs the dense float32 heatmaps of the official loader.

Builds a COCO-like synthetic set (80 categories, 3-12 objects per image, objects 20-300 px in
400-640 px images), precomputes it at input 512 (output 128) with the official radius, and
measures the zstd-compressed Arrow bytes of the target columns (sparse heatmap, wh/reg/ind/mask,
boxes, classes, affine, ids) per sample against 80 x 128 x 128 x 4 bytes. Target: <= 1/50.

    python benchmarks/shard_size.py [--images 64] [--radius-variant official]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import ray

from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import precompute
from pipeline.reader import read_manifest
from pipeline.schema import PrecomputeSettings

DENSE_BYTES = 80 * 128 * 128 * 4


def coco_like(root: Path, num_images: int, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic images with their objects spread over 80 category ids (as COCO's 80 classes)."""
    ds = make_synthetic_coco(root, num_images, seed=seed, image_size=(400, 640),
                             objects_per_image=(3, 12), object_size=(20, 300))
    data = json.loads(ds.annotations.read_text())
    rng = np.random.default_rng(seed)
    for ann in data["annotations"]:
        ann["category_id"] = int(rng.integers(1, 81))
    data["categories"] = [{"id": i, "name": f"class{i}"} for i in range(1, 81)]
    path = root / "annotations80.json"
    path.write_text(json.dumps(data))
    return ds.images_dir, path


def target_bytes(shard_dir: Path) -> tuple[int, int, int]:
    """(target-column bytes, whole-shard bytes, samples): targets rewritten without the image column."""
    manifest = read_manifest(shard_dir)
    targets = total = 0
    for entry in manifest["shards"]:
        path = shard_dir / entry["file"]
        total += path.stat().st_size
        table = ipc.open_file(str(path)).read_all().drop_columns(["image"])
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
            for batch in table.to_batches(max_chunksize=64):
                w.write_batch(batch)
        targets += sink.getvalue().size
    return targets, total, manifest["num_samples"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--radius-variant", default="official", choices=["official", "corrected"])
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images, annotations = coco_like(Path(tmp) / "data", args.images)
            settings = PrecomputeSettings.of(input_size=512, radius_variant=args.radius_variant)
            out = Path(tmp) / "shards"
            result = precompute(images, annotations, out, settings, chunk_size=16, progress=False)
            targets, total, n = target_bytes(out)
            stats = result.manifest["stats"]
    finally:
        ray.shutdown()
    per_sample = targets / n
    print(f"samples: {n}, objects/sample: {stats['objects'] / n:.1f}, radius variant: {args.radius_variant}")
    print(f"dense float32 80x128x128 heatmap: {DENSE_BYTES:,} bytes/sample")
    print(f"stored targets (sparse hm + wh/reg/ind/mask + boxes, zstd): {per_sample:,.0f} bytes/sample")
    print(f"whole shard incl. the image ({settings.image_format}): {total / n:,.0f} bytes/sample")
    ratio = per_sample / DENSE_BYTES
    print(f"ratio stored/dense: 1/{1 / ratio:.0f} ({'meets' if ratio <= 1 / 50 else 'MISSES'} the 1/50 target)")


if __name__ == "__main__":
    main()
