"""Precompute CenterNet training targets into sharded Arrow files with Ray tasks.

One Ray task per chunk of images: decode + validate -> augment -> letterbox -> ``encode_sparse`` ->
one shard file ``part-NNNNN.arrow`` written atomically. The driver validates the JSON, schedules
the chunks (at most ``workers`` in flight), skips shards a previous run already finished with the
same inputs and settings, then writes ``rejects.jsonl``, ``annotations.clean.json``, ``stats.png``
and, last, ``manifest.json``. A run killed at any point leaves no partial shard (temporaries are
removed on the next run) and no manifest; rerunning finishes only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from centernet.data import CategoryMap
from centernet.targets import encode_sparse
from pipeline.augment import letterbox_view, view_rng
from pipeline.ray_local import local_ray
from pipeline.schema import (
    CLEAN_ANNOTATIONS_NAME,
    MANIFEST_NAME,
    REJECTS_NAME,
    SCHEMA_VERSION,
    SHARD_PATTERN,
    STATS_PNG_NAME,
    PrecomputeSettings,
)
from pipeline.shards import (
    TMP_MARKER,
    atomic_write_bytes,
    encode_rows,
    exists,
    join,
    open_shard,
    remove_stale_temporaries,
    resolve,
    sha256,
    shard_metadata,
    write_json,
)
from pipeline.shard_reuse import chunk_key, reusable_shards, shard_entry
from pipeline.stats import TargetStats, merge_stats, plot_stats, summary_line
from pipeline.validate import ImageEntry, JsonValidation, check_counts, validate_coco_json, validate_entry

DEFAULT_CHUNK_SIZE = 64


class PrecomputeInterrupted(RuntimeError):
    """Raised by the ``stop_after_shards`` test hook, as if the run had been killed."""


@dataclass(frozen=True)
class PrecomputeResult:
    """Where the shards went and what the run did."""

    out: str
    manifest: dict[str, Any]
    shards_written: int
    shards_skipped: int
    task_cpu_seconds: float = 0.0  # CPU time the chunk tasks of this run used, summed
    worker_peak_rss_bytes: int = 0  # largest peak RSS of a Ray worker process that ran a chunk task
    task_wall_seconds: float = 0.0  # wall time inside the chunk tasks of this run, summed
    driver_seconds: dict[str, float] = field(default_factory=dict)  # "setup", "tasks", "finish" wall


def encode_image(image_bgr: np.ndarray, settings: PrecomputeSettings, what: str) -> bytes:
    """``[S, S, 3]`` uint8 BGR -> stored bytes: raw C-order pixels, or a JPEG/PNG file."""
    import cv2

    if settings.image_format == "raw":
        return np.ascontiguousarray(image_bgr, dtype=np.uint8).tobytes()
    if settings.image_format == "jpg":
        ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise RuntimeError(f"could not encode {what} as {settings.image_format}")
    return buf.tobytes()


def make_row(image_id: int, view: int, image_bgr: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
             affine: np.ndarray, targets: dict[str, np.ndarray], settings: PrecomputeSettings) -> dict[str, Any]:
    """One shard row from :func:`centernet.targets.encode_sparse` targets (heatmap as index + value)."""
    return {
        "image_id": int(image_id), "view": int(view),
        "image": encode_image(image_bgr, settings, f"image {image_id} view {view}"),
        "affine": np.asarray(affine, np.float64).reshape(6),
        "boxes": np.asarray(boxes, np.float32).reshape(-1), "classes": np.asarray(classes, np.int32),
        "hm_index": targets["hm_index"].astype(np.int32), "hm_value": targets["hm_value"],
        "wh": targets["wh"].reshape(-1), "reg": targets["reg"].reshape(-1),
        "ind": targets["ind"], "mask": targets["mask"],
    }


def process_chunk(index: int, entries: list[ImageEntry], images_dir: str, categories: dict[str, Any],
                  settings_dict: dict[str, Any], out_uri: str, chunk_key: str) -> dict[str, Any]:
    """Validate, augment and encode one chunk of images and write its shard (a Ray task body).

    Returns the shard's manifest entry plus its validation counts and target statistics.
    """
    import cv2

    cv2.setNumThreads(1)  # one core per task; Ray schedules the parallelism
    cpu0, wall0 = time.process_time(), time.perf_counter()
    settings = PrecomputeSettings.from_dict(settings_dict)
    cats = CategoryMap.from_dict(categories)
    size_out = settings.output_size
    rows: list[dict[str, Any]] = []
    stats = TargetStats()
    counts: Counter = Counter()
    rejects: list[dict[str, Any]] = []
    clean_images: list[dict[str, Any]] = []
    clean_annotations: list[dict[str, Any]] = []
    for entry in entries:
        result = validate_entry(entry, images_dir, cats)
        counts.update(result.counts)
        rejects.extend(result.rejects)
        if result.image is None:
            continue
        clean_images.append(result.clean_image)
        clean_annotations.extend(result.clean_annotations)
        for view in range(settings.views):
            rng = view_rng(settings.seed, entry.image_id, view) if settings.augment else None
            image, boxes, affine = letterbox_view(result.image, result.boxes, settings, rng)
            targets, enc_stats = encode_sparse(boxes, result.classes, cats.num_classes, (size_out, size_out),
                                        max_objs=settings.max_objs, min_overlap=settings.sample.min_overlap,
                                        radius_variant=settings.sample.radius_variant, return_stats=True)
            stats.add(len(boxes), enc_stats, first_view=view == 0)
            rows.append(make_row(entry.image_id, view, image, boxes, result.classes, affine, targets, settings))
    name = SHARD_PATTERN.format(index)
    meta = {
        "schema_version": SCHEMA_VERSION, "settings_hash": settings.settings_hash,
        "chunk_index": index, "chunk_key": chunk_key, "num_samples": len(rows),
        "num_images": len(clean_images), "counts": dict(counts), "stats": stats.to_dict(),
        "rejects": rejects, "clean_images": clean_images, "clean_annotations": clean_annotations,
    }
    data = encode_rows(rows, meta)
    fs, out = resolve(out_uri)
    atomic_write_bytes(fs, join(out, name), data)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; the worker's lifetime
    return {**shard_entry(name, meta, sha256(data), len(data)), "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - wall0,
            "worker_peak_rss_bytes": int(peak)}


def _write_outputs(fs: Any, out: str, checked: JsonValidation, shards: list[dict[str, Any]]) -> None:
    """``rejects.jsonl`` and ``annotations.clean.json``, streamed shard by shard from shard metadata.

    Only one shard's metadata is in memory at a time, so the driver's memory does not grow with
    the dataset beyond the validated JSON itself.
    """
    with _AtomicText(fs, join(out, REJECTS_NAME)) as rejects, \
            _AtomicText(fs, join(out, CLEAN_ANNOTATIONS_NAME)) as clean:
        for r in checked.rejects:
            rejects.write(json.dumps(r, sort_keys=True) + "\n")
        head = json.dumps(checked.info, sort_keys=True)  # always has "categories"
        clean.write(head[:-1] + ', "images": [\n')
        metas = []
        first = True
        for shard in shards:
            meta = shard_metadata(open_shard(fs, join(out, shard["file"])))
            for r in meta["rejects"]:
                rejects.write(json.dumps(r, sort_keys=True) + "\n")
            for i in meta["clean_images"]:
                clean.write(("" if first else ",\n") + json.dumps(i, sort_keys=True))
                first = False
            metas.append(shard["file"])
        clean.write('],\n"annotations": [\n')
        first = True
        for name in metas:  # a second pass keeps images before annotations without holding them
            meta = shard_metadata(open_shard(fs, join(out, name)))
            for a in meta["clean_annotations"]:
                clean.write(("" if first else ",\n") + json.dumps(a, sort_keys=True))
                first = False
        clean.write("]}\n")


class _AtomicText:
    """A text file written through a buffered stream to a temporary name, renamed on success."""

    def __init__(self, fs: Any, path: str, buffer_bytes: int = 1 << 20):
        self.fs, self.path = fs, path
        self.tmp = f"{path}{TMP_MARKER}{uuid.uuid4().hex[:8]}"
        self.buffer_bytes = buffer_bytes
        self.parts: list[bytes] = []
        self.size = 0

    def __enter__(self) -> _AtomicText:
        self.stream = self.fs.open_output_stream(self.tmp)
        return self

    def write(self, text: str) -> None:
        data = text.encode()
        self.parts.append(data)
        self.size += len(data)
        if self.size >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.stream.write(b"".join(self.parts))
            self.parts, self.size = [], 0

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.flush()
            self.stream.close()
            if exc_type is None:
                self.fs.move(self.tmp, self.path)
        finally:
            if exists(self.fs, self.tmp):
                self.fs.delete_file(self.tmp)


def check_images_present(checked: JsonValidation, images_dir: str) -> None:
    """``ValueError`` before any work when the image directory is missing or holds none of the
    images the annotations list (a wrong ``--images``); single missing files are rejects instead."""
    root = Path(images_dir)
    if not root.is_dir():
        raise ValueError(f"{images_dir}: image directory not found")
    if checked.entries and not any((root / e.file_name).is_file() for e in checked.entries):
        first = checked.entries[0].file_name
        raise ValueError(f"{images_dir}: none of the {len(checked.entries)} images listed in "
                         f"{checked.annotations_path} is there (the first is {first!r}); is --images the "
                         "directory their file_name entries are relative to?")


def precompute(
    images_dir: str | Path,
    annotations: str | Path,
    out: str | Path,
    settings: PrecomputeSettings,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    progress: bool = True,
    stop_after_shards: int | None = None,
    ray_context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> PrecomputeResult:
    """Validate a COCO dataset and write its samples as shards + manifest under ``out``.

    Args:
        images_dir: directory the ``file_name`` entries are relative to (local or shared path).
        annotations: COCO JSON file.
        out: output directory (local/shared path or a ``pyarrow.fs`` URI such as ``s3://…``).
        settings: what the samples look like (hashed into the manifest).
        chunk_size: images per Ray task and per shard.
        workers: at most this many chunks in flight (default: the cluster's CPUs).
        stop_after_shards: test hook: raise :class:`PrecomputeInterrupted` after this many shards
            were written in this run, cancelling (killing) the tasks still running.
        ray_context: a context manager factory entered while shards are written (e.g. a connection
            to a cluster, or one shared with other callers); default: the embedded local instance
            when none is running.

    Uses the Ray instance already initialised, else starts one only after the inputs were checked
    and only when some shard must be written. ``ValueError`` when every image is rejected
    (``rejects.jsonl`` says why).
    """
    import ray

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    images_dir = str(Path(images_dir).resolve())
    annotations = Path(annotations).resolve()
    t_start = time.perf_counter()
    checked = validate_coco_json(annotations)  # before anything is written: ValueError if not COCO
    check_images_present(checked, images_dir)
    fs, out_path = resolve(out)
    out_uri = str(out) if "://" in str(out) else out_path
    fs.create_dir(out_path, recursive=True)
    remove_stale_temporaries(fs, out_path)

    if not checked.entries:
        _write_outputs(fs, out_path, checked, [])
        check_counts(checked.counts, str(annotations))  # raises: nothing survived
    settings_hash = settings.settings_hash
    chunks = [checked.entries[i : i + chunk_size] for i in range(0, len(checked.entries), chunk_size)]
    keys = [chunk_key(settings_hash, i, c, images_dir) for i, c in enumerate(chunks)]
    manifest_path = join(out_path, MANIFEST_NAME)
    had_manifest = exists(fs, manifest_path)
    entries = reusable_shards(fs, out_path, keys, len(chunks), manifest_path)
    todo = [i for i, e in enumerate(entries) if e is None]

    t_tasks = time.perf_counter()
    written = 0
    with contextlib.ExitStack() as stack:
        if todo and ray_context is not None:  # the caller's (it knows whether one is running)
            stack.enter_context(ray_context())
        elif todo and not ray.is_initialized():  # the embedded instance, on loopback
            stack.enter_context(local_ray(num_cpus=workers, dashboard=False))
        if todo:
            written = _run_chunk_tasks(entries, todo, chunks, keys, images_dir, checked, settings, out_uri,
                                       workers=workers, progress=progress, stop_after_shards=stop_after_shards)

    t_finish = time.perf_counter()
    shards: list[dict[str, Any]] = [e for e in entries if e is not None]
    _write_outputs(fs, out_path, checked, shards)
    counts = Counter(checked.counts)
    for s in shards:
        counts.update(s["counts"])
    check_counts(counts, str(annotations))
    stats = merge_stats([s["stats"] for s in shards])
    png = join(out_path, STATS_PNG_NAME)
    if todo or not had_manifest or not exists(fs, png):  # a no-op rerun keeps the identical picture
        atomic_write_bytes(fs, png, plot_stats(stats, title=f"{annotations.name}: {summary_line(stats)}"))
    manifest = _manifest(settings, checked, shards, counts, stats, chunk_size, images_dir, annotations)
    write_json(fs, manifest_path, manifest)
    cpu = sum(s.get("cpu_seconds", 0.0) for s in shards)
    wall = sum(s.get("wall_seconds", 0.0) for s in shards)
    peak = max((s.get("worker_peak_rss_bytes", 0) for s in shards), default=0)
    t_end = time.perf_counter()
    driver = {"setup": t_tasks - t_start, "tasks": t_finish - t_tasks, "finish": t_end - t_finish}
    return PrecomputeResult(out_uri, manifest, written, len(chunks) - len(todo), cpu, peak, wall, driver)


def _run_chunk_tasks(entries: list[dict[str, Any] | None], todo: list[int], chunks: list[list[Any]],
                     keys: list[str], images_dir: str, checked: JsonValidation, settings: PrecomputeSettings, out_uri: str,
                     *, workers: int | None, progress: bool, stop_after_shards: int | None) -> int:
    """Run the chunks ``todo`` as Ray tasks (at most ``workers`` in flight), filling ``entries``;
    returns how many shards were written. On any exception the running tasks are cancelled and
    waited for, so nothing of this run is still writing when it returns."""
    import ray
    from tqdm.auto import tqdm

    limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1, max_retries=2)(process_chunk)
    cats = checked.categories.to_dict()
    settings_dict = settings.to_dict()
    pending: dict[Any, int] = {}
    queue = list(todo)
    written = 0
    bar = tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc="precompute", unit="chunk",
               disable=not progress)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                i = queue.pop(0)
                pending[task.remote(i, chunks[i], images_dir, cats, settings_dict, out_uri, keys[i])] = i
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                entries[pending.pop(ref)] = ray.get(ref)
                written += 1
                bar.update(1)
            if stop_after_shards is not None and written >= stop_after_shards:
                raise PrecomputeInterrupted(f"stopped after {written} shards (test hook)")
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        if pending:  # return only once nothing of this run is still writing
            ray.wait(list(pending), num_returns=len(pending), timeout=30)
        raise
    finally:
        bar.close()
    return written


def _manifest(settings: PrecomputeSettings, checked: JsonValidation, shards: list[dict[str, Any]], counts: Counter,
              stats: dict[str, Any], chunk_size: int, images_dir: str, annotations: Path) -> dict[str, Any]:
    """The manifest of a finished precompute: settings and their hash, classes, counts, shards."""
    settings_hash = settings.settings_hash
    return {
        "schema_version": SCHEMA_VERSION,
        "settings_hash": settings_hash,
        "settings": settings.to_dict(),
        "split": "train" if settings.augment else "val",
        "input_size": settings.input_size,
        "output_size": settings.output_size,
        "num_classes": checked.categories.num_classes,
        "classes": checked.categories.to_dict(),
        "num_samples": sum(s["num_samples"] for s in shards),
        "num_images": sum(s["num_images"] for s in shards),
        "counts": {k: int(v) for k, v in sorted(counts.items())},
        "stats": stats,
        "chunk_size": chunk_size,
        "shards": [{k: s[k] for k in ("file", "num_samples", "num_images", "sha256", "bytes", "chunk_key")}
                   for s in shards],
        "source": {"images_dir": images_dir, "annotations": str(annotations),
                   "annotations_sha256": sha256(annotations.read_bytes())},
        "source_annotations": str(annotations),
        "clean_annotations": CLEAN_ANNOTATIONS_NAME,
        "rejects": REJECTS_NAME,
        "stats_png": STATS_PNG_NAME,
    }
