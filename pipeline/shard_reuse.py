"""Which shards of an earlier precompute run can be kept: a chunk's key hashes everything its shard
depends on (schema, settings, its images' names, sizes and mtimes, their annotations); a shard whose
stored key matches is reused, with its checksum taken from the previous manifest when the size agrees."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import Any

import pyarrow.fs as pafs

from pipeline.schema import SCHEMA_VERSION, SHARD_PATTERN
from pipeline.shards import exists, join, open_shard, read_bytes, read_json, sha256, shard_metadata
from pipeline.validate import ImageEntry


def chunk_key(settings_hash: str, index: int, entries: list[ImageEntry], images_dir: str) -> str:
    """Hash of everything a chunk's shard depends on: settings, its images (name, size, mtime), JSON."""
    h = hashlib.sha256(f"{SCHEMA_VERSION}|{settings_hash}|{index}".encode())
    for e in entries:
        try:
            st = os.stat(os.path.join(images_dir, e.file_name))
            file_sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            file_sig = None
        h.update(json.dumps([asdict(e), file_sig], sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def shard_entry(name: str, meta: dict[str, Any], checksum: str, nbytes: int) -> dict[str, Any]:
    return {"file": name, "num_samples": meta["num_samples"], "num_images": meta["num_images"],
            "sha256": checksum, "bytes": nbytes, "chunk_key": meta["chunk_key"],
            "counts": meta["counts"], "stats": meta["stats"]}


def _finished_shard(fs: Any, path: str, name: str, chunk_key: str,
                    previous: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest entry of an already finished shard for ``chunk_key``, or ``None`` to redo it."""
    if not exists(fs, path):
        return None
    try:
        meta = shard_metadata(open_shard(fs, path))
    except ValueError:
        return None  # unreadable (e.g. copied half-way by hand): rewrite it
    if meta.get("chunk_key") != chunk_key or meta.get("schema_version") != SCHEMA_VERSION:
        return None
    old = previous.get(name)
    size = fs.get_file_info(path).size
    if old and old.get("chunk_key") == chunk_key and old.get("bytes") == size:
        checksum = old["sha256"]
    else:
        checksum = sha256(read_bytes(fs, path))
    return shard_entry(name, meta, checksum, size)


def reusable_shards(fs: pafs.FileSystem, out_path: str, keys: list[str], num_chunks: int,
                     manifest_path: str) -> list[dict[str, Any] | None]:
    """Per chunk, the manifest entry of its finished shard from an earlier run (None: to write).

    When anything is to be written, the old manifest is removed first (never a manifest that
    describes other shards), and so are the shards of a previous, larger layout."""
    previous: dict[str, dict[str, Any]] = {}
    if exists(fs, manifest_path):
        try:
            previous = {s["file"]: s for s in read_json(fs, manifest_path).get("shards", [])}
        except (ValueError, KeyError, TypeError):
            previous = {}
    entries: list[dict[str, Any] | None] = []
    for i, key in enumerate(keys):
        name = SHARD_PATTERN.format(i)
        entries.append(_finished_shard(fs, join(out_path, name), name, key, previous))
    if any(e is None for e in entries) and exists(fs, manifest_path):
        fs.delete_file(manifest_path)
    current = {SHARD_PATTERN.format(i) for i in range(num_chunks)}
    for info in fs.get_file_info(pafs.FileSelector(out_path)):
        stale = info.base_name.startswith("part-") and info.base_name.endswith(".arrow")
        if stale and info.base_name not in current:
            fs.delete_file(info.path)
    return entries
