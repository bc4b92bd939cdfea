"""Validate a COCO dataset and precompute its CenterNet targets into sharded Arrow files (Ray tasks).

Writes part-NNNNN.arrow shards, manifest.json, rejects.jsonl (every rejected or repaired item with its reason), annotations.clean.json (for evaluation) and stats.png (radii, objects per image, center collisions, max_objs truncations).

Rerunning with the same settings skips finished shards: an interrupted run resumes by running it again.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from workflows.console import VERBOSE_HELP

EXAMPLES = """Examples:

  # training shards: official augmentation, 2 augmented views per image, 4 local Ray workers
  centernet precompute --images coco/train2017 --annotations coco/annotations/instances_train2017.json \\
      --out shards/train --workers 4 --views 2

  # validation shards: plain letterboxed images, one per image, stored as JPEG (smaller, slower to read)
  centernet precompute --images coco/val2017 --annotations coco/annotations/instances_val2017.json \\
      --out shards/val --no-augment --image-format jpg

  # on a cluster (output on storage every node sees)
  centernet precompute --images /nfs/coco/train2017 --annotations /nfs/coco/train.json \\
      --out /nfs/shards/train --address ray://head:10001
"""


class ImageFormat(str, Enum):
    raw = "raw"
    jpg = "jpg"
    png = "png"


class RadiusVariant(str, Enum):
    official = "official"
    corrected = "corrected"


def command(
    images: Path = typer.Option(..., "--images", help="Directory the image file_names are relative to."),
    annotations: Path = typer.Option(..., "--annotations", help="COCO-format annotation JSON."),
    out: str = typer.Option(..., "--out", help="Output directory (local/shared path or s3:// URI)."),
    input_size: int = typer.Option(512, min=32, help="Square network input size (multiple of 32)."),
    workers: int = typer.Option(None, min=1, help="Parallel Ray tasks (default: all CPUs)."),
    views: int = typer.Option(1, min=1, help="Augmented copies per image (training data)."),
    no_augment: bool = typer.Option(False, "--no-augment",
                                    help="Plain letterboxed images, one per image (validation data)."),
    radius_variant: RadiusVariant = typer.Option(RadiusVariant.official, help="Gaussian radius formula."),
    image_format: ImageFormat = typer.Option(
        ImageFormat.raw, help="How images are stored: raw uint8 pixels (zstd; fastest reader), "
        "jpg (smallest on photos, lossy) or png (lossless)."),
    address: str = typer.Option(None, help="Ray cluster address (default: a local Ray instance)."),
    seed: int = typer.Option(0, help="Seed of the augmentation."),
    max_objs: int = typer.Option(128, min=1, help="Object slots per sample (official 128)."),
    chunk_size: int = typer.Option(64, min=1, help="Images per Ray task and per shard."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    import sys

    from pipeline.precompute import precompute
    from pipeline.schema import PrecomputeSettings
    from pipeline.stats import summary_line
    from workflows.errors import UserError
    from workflows.ray_runtime import ray_session
    from workflows.user_paths import on_cluster, resolve_user_path

    cluster = on_cluster(address)
    images_dir = resolve_user_path(str(images), option="--images", on_cluster=cluster)
    annotations_file = resolve_user_path(str(annotations), option="--annotations", on_cluster=cluster)
    out_dir = resolve_user_path(out, option="--out", on_cluster=cluster)
    try:
        settings = PrecomputeSettings(input_size=input_size, views=views, augment=not no_augment,
                                      radius_variant=radius_variant.value, seed=seed, max_objs=max_objs,
                                      image_format=image_format.value)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        with ray_session(address, num_cpus=workers, dashboard=False, verbose=verbose, ship_code=True):
            result = precompute(images_dir, annotations_file, out_dir, settings, chunk_size=chunk_size,
                                workers=workers, progress=not quiet and sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    m = result.manifest
    c = m["counts"]
    typer.echo(f"images:      {c['images_input']} in, {c['images_accepted']} accepted, "
               f"{c['images_repaired']} repaired, {c['images_rejected']} rejected "
               f"({c['images_negative']} without objects, kept as negatives)")
    typer.echo(f"annotations: {c['annotations_input']} in, {c['annotations_accepted']} accepted, "
               f"{c['annotations_repaired']} repaired, {c['annotations_rejected']} rejected "
               f"({c['annotations_crowd']} crowd, kept out of targets)")
    typer.echo(f"targets:     {summary_line(m['stats'])}")
    typer.echo(f"shards:      {len(m['shards'])} ({result.shards_written} written, "
               f"{result.shards_skipped} already done), {m['num_samples']} samples -> {result.out}")
