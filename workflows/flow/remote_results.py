"""A results directory at a URI (``s3://bucket/prefix``, or anything else ``pyarrow.fs`` opens).

Prefect keeps task results and cache records in a storage block; :func:`result_storage_block`
gives one that reads and writes through ``pyarrow.fs``: the same filesystem layer as the shards
and Ray Train's checkpoints, configured by the same ``AWS_*`` variables, so no other S3 client is
needed. The flow saves it to the Prefect API it runs on (Prefect takes only saved blocks) and
hands it to its tasks; whoever reruns the config, on this machine or another, finds the cache
records at the URI. Step outputs (the evaluation report, the predictions) are written to a local
temporary folder and uploaded (:func:`staged_output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

UPLOAD_PREFIX = "centernet-upload-"
BLOCK_NAME_PREFIX = "centernet-results-"


def is_uri(path: str) -> bool:
    return "://" in path


def result_storage_block(basepath: str) -> Any:
    """A Prefect ``WritableFileSystem`` block keeping records under the URI ``basepath``, saved to
    the current Prefect API as ``centernet-results-<hash of the URI>`` (Prefect takes only saved
    blocks as result storage); call it inside the flow, where the API is up."""
    import hashlib

    basepath = basepath.rstrip("/")
    block = _storage_class()(basepath=basepath)
    block.save(f"{BLOCK_NAME_PREFIX}{hashlib.sha256(basepath.encode()).hexdigest()[:12]}", overwrite=True)
    return block


@lru_cache(maxsize=1)
def _storage_class() -> type:
    """The block class, defined on first use (importing Prefect has effects of its own)."""
    from prefect.filesystems import WritableFileSystem

    from pipeline.shards import atomic_write_bytes, join, read_bytes

    class ArrowResultStorage(WritableFileSystem):
        """Prefect result storage at ``basepath`` through ``pyarrow.fs``.

        Keys are resolved to filesystem paths (``bucket/prefix/key``, no scheme) by
        :meth:`_resolve_path`, as Prefect's ``ResultStore`` expects of a path-based block.
        """

        _block_type_name = "CenterNet pyarrow result storage"
        basepath: str

        def _resolve_path(self, path: str | None) -> str:
            root = _filesystem(self.basepath)[1].rstrip("/")
            if not path:
                return root
            return path if path == root or path.startswith(root + "/") else join(root, path.lstrip("/"))

        def read_path(self, path: str, _sync: bool | None = None) -> bytes:  # noqa: ARG002 (Prefect's dispatch flag)
            return read_bytes(_filesystem(self.basepath)[0], self._resolve_path(path))

        async def aread_path(self, path: str) -> bytes:
            return await asyncio.to_thread(self.read_path, path)

        def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:  # noqa: ARG002
            where = self._resolve_path(path)
            fs = _filesystem(self.basepath)[0]
            _make_parent(fs, where)
            atomic_write_bytes(fs, where, content)
            return where

        async def awrite_path(self, path: str, content: bytes) -> str:
            return await asyncio.to_thread(self.write_path, path, content)

    return ArrowResultStorage


@lru_cache(maxsize=8)
def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of ``uri``, made once per URI."""
    from pipeline.shards import resolve

    return resolve(uri)


@contextlib.contextmanager
def staged_output(target: str) -> Iterator[Path]:
    """A local path to write ``target`` (a file or a directory) at: ``target`` itself when it is
    local; for a URI, a path in a temporary folder whose content is uploaded to ``target`` when
    the block ends without an error (and removed either way)."""
    if not is_uri(target):
        yield Path(target)
        return
    import pyarrow.fs as pafs

    from pipeline.shards import resolve

    with tempfile.TemporaryDirectory(prefix=UPLOAD_PREFIX) as tmp:
        local = Path(tmp) / target.rstrip("/").rsplit("/", 1)[-1]
        yield local
        fs, where = resolve(target)
        _make_parent(fs, where)
        pafs.copy_files(str(local), where, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _make_parent(fs: Any, path: str) -> None:
    """Create the folder ``path`` goes in, where folders exist (object stores have none: no marker
    object written for every record)."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rstrip("/").rsplit("/", 1)[0], recursive=True)


def output_exists(path: str) -> bool:
    """Whether the local path or URI ``path`` names an existing file or directory."""
    from pipeline.shards import exists, resolve

    return exists(*resolve(path))
