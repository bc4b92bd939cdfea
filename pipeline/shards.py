"""Arrow IPC shard files: atomic writes, checksums, metadata, and reading rows back.

Paths may be local (absolute or relative) or URIs that ``pyarrow.fs`` understands (``s3://…``);
all I/O goes through :func:`resolve`, so a shared directory or an object store both work.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from pipeline.schema import shard_schema

SHARD_META_KEY = b"centernet"
ROWS_PER_BATCH = 64
TMP_MARKER = ".tmp-"


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a ``scheme://`` URI."""
    text = str(uri)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def atomic_write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write to a unique temporary name next to ``path``, then rename onto it."""
    tmp = f"{path}{TMP_MARKER}{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    atomic_write_bytes(fs, path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    return json.loads(read_bytes(fs, path))


def remove_stale_temporaries(fs: pafs.FileSystem, directory: str) -> int:
    """Delete leftovers of interrupted atomic writes in ``directory``; returns how many."""
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
        if TMP_MARKER in info.base_name and info.type == pafs.FileType.File:
            fs.delete_file(info.path)
            removed += 1
    return removed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_rows(rows: list[dict[str, Any]], metadata: dict[str, Any]) -> bytes:
    """Rows (see :func:`pipeline.schema.shard_schema`) -> Arrow IPC file bytes, zstd-compressed.

    ``metadata`` (JSON-able) is stored in the schema under ``centernet``. Deterministic: the same
    rows and metadata give the same bytes.
    """
    metadata = {**metadata, "rows_per_batch": ROWS_PER_BATCH}
    schema = shard_schema({SHARD_META_KEY: json.dumps(metadata, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_file(sink, schema, options=options) as writer:
        for start in range(0, len(rows), ROWS_PER_BATCH):
            part = rows[start : start + ROWS_PER_BATCH]
            columns = [_column([r[f.name] for r in part], f.type) for f in schema]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    return sink.getvalue().to_pybytes()


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    """One column from per-row values (numpy arrays for list types), built without Python loops."""
    if pa.types.is_fixed_size_list(typ):
        flat = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values])
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=typ.value_type), typ.list_size)
    if pa.types.is_list(typ):
        arrays = [np.asarray(v).ravel() for v in values]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        flat = np.concatenate(arrays) if arrays else np.zeros(0)
        flat = flat.astype(typ.value_type.to_pandas_dtype(), copy=False)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, type=typ.value_type))
    return pa.array(values, type=typ)


def open_shard(fs: pafs.FileSystem, path: str) -> ipc.RecordBatchFileReader:
    """Open a shard for random access to its record batches; ``ValueError`` naming a bad file.

    Local files are read with positioned reads (not memory-mapped), so pages of shards already
    streamed do not stay in the reader's resident memory.
    """
    try:
        source = pa.OSFile(path) if isinstance(fs, pafs.LocalFileSystem) else fs.open_input_file(path)
        return ipc.open_file(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a readable Arrow IPC shard ({exc})") from None


def shard_metadata(reader: ipc.RecordBatchFileReader) -> dict[str, Any]:
    """The ``centernet`` metadata a shard was written with."""
    meta = reader.schema.metadata or {}
    if SHARD_META_KEY not in meta:
        raise ValueError("shard has no centernet metadata")
    return json.loads(meta[SHARD_META_KEY])


def _list_column(batch: pa.RecordBatch, name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list column as numpy (zero-copy where possible)."""
    col = batch.column(name)
    values = col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    offsets = col.offsets.to_numpy()
    offsets = offsets - offsets[0]
    return values, offsets


def _binary_column(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(bytes as uint8 ``[total]``, offsets ``[rows+1]``) of a binary column, zero-copy."""
    col = batch.column(name)
    _, offsets_buf, data_buf = col.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[col.offset : col.offset + len(col) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


LIST_COLUMNS = {"boxes": np.float32, "classes": np.int32, "hm_index": np.int32, "hm_value": np.float32,
                "wh": np.float32, "reg": np.float32, "ind": np.int64, "mask": np.uint8}


def iter_raw_rows(batch: pa.RecordBatch) -> Iterator[dict[str, Any]]:
    """The rows of a record batch as dicts of read-only numpy views into the batch (no copies).

    "image" is the stored image as a uint8 ``[bytes]`` view (raw pixels or an encoded file);
    decoding is left to the caller. Views keep the whole batch alive: copy what you keep.
    """
    image_ids = batch.column("image_id").to_numpy()
    views = batch.column("view").to_numpy()
    image_data, image_offsets = _binary_column(batch, "image")
    affine = batch.column("affine").flatten().to_numpy(zero_copy_only=False).reshape(-1, 2, 3)
    cols = [(name, *_list_column(batch, name, dtype)) for name, dtype in LIST_COLUMNS.items()]
    for i in range(batch.num_rows):
        row: dict[str, Any] = {
            "image_id": int(image_ids[i]),
            "view": int(views[i]),
            "image": image_data[image_offsets[i] : image_offsets[i + 1]],
            "affine": affine[i],
        }
        for name, values, offsets in cols:
            row[name] = values[offsets[i] : offsets[i + 1]]
        yield row


def own_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw row that no longer references its record batch (for shuffle buffers)."""
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in row.items()}
