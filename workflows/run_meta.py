"""The metadata file of a training run directory (``<storage_path>/<name>/centernet_run.json``):
the MLflow run id and tracking URI and the config, so that ``--resume`` continues the same run.
Local paths and URIs alike, written atomically through :mod:`pipeline.shards`."""

from __future__ import annotations

from typing import Any

from pipeline.shards import exists, join, read_json, resolve, write_json

RUN_META_FILE = "centernet_run.json"


def read_run_meta(run_dir: str, file: str = RUN_META_FILE) -> dict[str, Any] | None:
    """The metadata of ``run_dir`` (its ``file``), or ``None`` when it holds no run."""
    fs, path = resolve(run_dir)
    target = join(path, file)
    return read_json(fs, target) if exists(fs, target) else None


def write_run_meta(run_dir: str, meta: dict[str, Any], file: str = RUN_META_FILE) -> None:
    """Write (atomically) the metadata of ``run_dir`` (its ``file``), creating the directory."""
    fs, path = resolve(run_dir)
    fs.create_dir(path, recursive=True)
    write_json(fs, join(path, file), meta)
