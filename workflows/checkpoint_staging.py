"""The local folder a training worker writes a checkpoint into before Ray Train stores it.

A worker killed while it holds one (a node lost, a job cancelled, SIGKILL) cannot remove it, and a
checkpoint is hundreds of MB. The folder is named by the worker's pid, so the next worker that
stages a checkpoint on the machine removes the folders of processes that are gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "centernet-ckpt-"
ORPHAN_AGE_S = 15 * 60  # older than any write in progress (a pid of another pid namespace stays safe)


def staging_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for one checkpoint (``PREFIX<pid>-…``), after removing orphaned ones."""
    remove_orphans(Path(tempfile.gettempdir()))
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")


def remove_orphans(root: Path, *, min_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove the staging folders under ``root`` whose process no longer runs and that are older
    than ``min_age_s``; returns them."""
    removed = []
    now = time.time()
    for path in root.glob(f"{PREFIX}*-*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        try:
            old = now - path.stat().st_mtime > min_age_s
        except OSError:  # removed meanwhile
            continue
        if pid.isdigit() and old and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
