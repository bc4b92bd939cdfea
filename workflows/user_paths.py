"""Paths as the user typed them: resolved against the directory the command was typed in before
they reach any Ray task, actor or Train worker (which run elsewhere); URIs pass through.

On a cluster a relative path means nothing to the other nodes, so it is an error that says to use
shared storage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workflows.errors import UserError

KEYWORDS = frozenset({"imagenet", "none"})  # values of path-like options that are not paths


def is_uri(text: str) -> bool:
    """``scheme://…`` (s3://, gs://, file://, hdfs://…)."""
    return "://" in text


def resolve_user_path(text: str, *, option: str, on_cluster: bool = False, cwd: str | Path | None = None) -> str:
    """``text`` made absolute against ``cwd`` (default: the current directory); URIs and the
    keywords ``imagenet``/``none`` unchanged. ``on_cluster``: a relative path is a ``UserError``."""
    if is_uri(text) or text in KEYWORDS:
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        if on_cluster:
            raise UserError(f"{option} {text}: a relative path on this machine means nothing on the cluster; "
                            "use shared storage every node sees (an absolute path on a shared filesystem, "
                            "or an s3:// URI)")
        path = Path(cwd or os.getcwd()) / path
    return str(path.resolve())


def resolve_user_paths(values: Mapping[str, Any], names: Iterable[str], *, on_cluster: bool = False,
                       cwd: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``values`` with the path entries ``names`` resolved (``None`` entries kept)."""
    out = dict(values)
    for name in names:
        if isinstance(out.get(name), str) and out[name]:
            out[name] = resolve_user_path(out[name], option="--" + name.replace("_", "-"),
                                          on_cluster=on_cluster, cwd=cwd)
    return out


def on_cluster(address: str | None) -> bool:
    """Whether a command runs on a cluster: an explicit address, or inside a submitted job."""
    return bool(address or os.environ.get("RAY_ADDRESS"))
