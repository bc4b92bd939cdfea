"""Validate a COCO dataset and precompute its CenterNet targets into sharded Arrow files (Ray tasks).

Writes part-NNNNN.arrow shards, manifest.json, rejects.jsonl (every rejected or repaired item with its reason), annotations.clean.json (for evaluation) and stats.png (radii, objects per image, center collisions, max_objs truncations).

Rerunning with the same settings skips finished shards: an interrupted run resumes by running it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from workflows.cli_options import cli_parameters, given_values, option, with_signature
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


def _run(*, images: Path, annotations: Path, out: str, workers: int | None = None, address: str | None = None,
         chunk_size: int = 64, quiet: bool = False, verbose: bool = False, **fields: Any) -> None:
    import sys

    from centernet.config_fields import from_mapping
    from pipeline.precompute import precompute
    from pipeline.schema import PrecomputeSettings
    from workflows.errors import UserError
    from workflows.ray_runtime import ray_session, worker_env_vars
    from workflows.user_paths import on_cluster, resolve_user_path

    cluster = on_cluster(address)
    images_dir = resolve_user_path(str(images), option="--images", on_cluster=cluster)
    annotations_file = resolve_user_path(str(annotations), option="--annotations", on_cluster=cluster)
    out_dir = resolve_user_path(out, option="--out", on_cluster=cluster)
    try:
        settings = from_mapping(PrecomputeSettings, given_values(PrecomputeSettings, fields), source="precompute")
    except ValueError as exc:
        raise UserError(str(exc)) from None

    def start_ray() -> Any:  # after the inputs were checked, and only when there are shards to write
        # the tasks write to --out: on a cluster they need the S3 settings of this shell
        return ray_session(address, env_vars=worker_env_vars(), num_cpus=workers, dashboard=False, verbose=verbose,
                           ship_code=True)

    try:
        result = precompute(images_dir, annotations_file, out_dir, settings, chunk_size=chunk_size, workers=workers,
                            progress=not quiet and sys.stderr.isatty(), ray_context=start_ray)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    report(result)


def report(result: Any) -> None:
    """What came in, what was kept and why, and where the shards are."""
    from pipeline.stats import summary_line

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


def _settings_parameters() -> list:
    from pipeline.schema import PrecomputeSettings

    return cli_parameters(PrecomputeSettings)


command = with_signature(_run, [
    option("images", Path, ..., "--images", help="Directory the image file_names are relative to."),
    option("annotations", Path, ..., "--annotations", help="COCO-format annotation JSON."),
    option("out", str, ..., "--out", help="Output directory (local/shared path or s3:// URI)."),
    *_settings_parameters(),
    option("workers", int | None, None, "--workers", min=1, help="Parallel Ray tasks [default: all CPUs]"),
    option("chunk_size", int, 64, "--chunk-size", min=1, help="Images per Ray task and per shard."),
    option("address", str | None, None, "--address",
           help="Ray cluster address [default: a local instance on 127.0.0.1]"),
    option("quiet", bool, False, "--quiet", help="No progress bar."),
    option("verbose", bool, False, "--verbose", "-v", help=VERBOSE_HELP),
])
