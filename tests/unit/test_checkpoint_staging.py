"""Checkpoint staging folders left by killed training workers are removed by the next one
(``workflows.checkpoint_staging``), and nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from workflows.checkpoint_staging import ORPHAN_AGE_S, PREFIX, remove_orphans, staging_dir


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(root, name: str, *, age_s: float):
    path = root / name
    path.mkdir()
    (path / "checkpoint.pt").write_bytes(b"x" * 1024)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_only_old_folders_of_processes_that_are_gone_are_removed(tmp_path):
    dead = _dead_pid()
    orphan = _folder(tmp_path, f"{PREFIX}{dead}-abc", age_s=ORPHAN_AGE_S + 60)
    young = _folder(tmp_path, f"{PREFIX}{dead}-new", age_s=10)  # may be a write in another pid namespace
    alive = _folder(tmp_path, f"{PREFIX}{os.getpid()}-abc", age_s=ORPHAN_AGE_S + 60)
    unnamed = _folder(tmp_path, f"{PREFIX}xyz", age_s=ORPHAN_AGE_S + 60)  # not ours to judge
    assert remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and young.exists() and alive.exists() and unnamed.exists()


def test_staging_dir_is_named_by_this_process_and_removed_after_use():
    with staging_dir() as tmp:
        assert os.path.basename(tmp).startswith(f"{PREFIX}{os.getpid()}-")
        assert os.path.isdir(tmp)
    assert not os.path.exists(tmp)
