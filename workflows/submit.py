"""Jobs on a Ray cluster through the Ray Jobs API: check a job's command line, submit it, follow it.

A job is a ``centernet`` command run on the cluster's head (``python -m workflows.cli …``) from an
uploaded copy of this project. Its paths are read there, so they must be absolute paths on storage
every node sees or URIs; a training job must keep its checkpoints somewhere that outlives the Ray
session (``--storage-path``), unless it resumes a run directory.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from workflows.errors import UserError
from workflows.user_paths import is_uri

JOB_COMMANDS = ("train", "tune", "run", "precompute", "evaluate", "register", "predict", "export")
PATH_OPTIONS = ("--data", "--val-data", "--storage-path", "--resume", "--config", "--pretrained", "--images",
                "--annotations", "--out", "--space", "--results-dir", "--model")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    final_status: str | None  # with follow


def split_job(args: list[str]) -> tuple[str, list[str]]:
    """(command, its arguments): a leading command name, else ``train``."""
    if args and args[0] in JOB_COMMANDS:
        return args[0], args[1:]
    return "train", args


def check_job_paths(command: str, args: list[str]) -> None:
    """``UserError`` for a path the cluster cannot see (relative) and for a training job whose
    checkpoints would land in the Ray session's temporary directory."""
    for i, arg in enumerate(args):
        flag, sep, inline = arg.partition("=")
        value = inline if sep else (args[i + 1] if i + 1 < len(args) else "")
        if flag in PATH_OPTIONS and value and not (is_uri(value) or Path(value).is_absolute()
                                                   or value in ("imagenet", "none")):
            raise UserError(f"{flag} {value}: the job reads its paths on the cluster; use an absolute path on "
                            "storage every node sees, or an s3:// URI")
    if command == "run":
        config = next((a for a in args if not a.startswith("-")), None)
        if config and not (is_uri(config) or Path(config).is_absolute()):
            raise UserError(f"{config}: the pipeline config is read on the cluster; give its absolute path on "
                            "shared storage")
    given = {a.partition("=")[0] for a in args}
    if command in ("train", "tune") and not given & {"--storage-path", "--resume", "--config"}:
        raise UserError("a training job needs --storage-path on storage every node sees (or --resume RUN_DIR): "
                        "without it, checkpoints would go to the Ray session's temporary directory and be lost")


def default_python(jobs_address: str) -> str:
    """This interpreter for a cluster on this machine (it has the project), else ``python``."""
    host = urlsplit(jobs_address).hostname or ""
    return sys.executable if host in LOOPBACK_HOSTS else "python"


def submit_job(address: str | None, job_args: list[str], *, working_dir: Path | None = None,
               job_id: str | None = None, entrypoint_cpus: float = 0.0, python: str | None = None,
               follow: bool = False, write: Callable[[str], None] = print) -> Submitted:
    """Check and submit a job; with ``follow``, stream its logs until it ends."""
    from workflows.ray_runtime import (
        follow_job_logs,
        job_runtime_env,
        jobs_address,
        jobs_client,
        probe_address,
        wait_for_job,
        worker_env_vars,
    )
    from workflows.tracking import GIT_COMMIT_ENV, git_commit, resolve_tracking_uri

    command, args = split_job(job_args)
    check_job_paths(command, args)
    where = jobs_address(address)
    probe_address(where)
    root = working_dir or Path(__file__).resolve().parents[1]
    same_machine = default_python(where) == sys.executable
    # An explicit MLFLOW_TRACKING_URI travels with the job; the local SQLite default only to a cluster
    # on this machine (elsewhere the cluster's own setting applies).
    tracking_uri = resolve_tracking_uri() if (same_machine or os.environ.get("MLFLOW_TRACKING_URI")) else None
    env = job_runtime_env(root, worker_env_vars(tracking_uri, {GIT_COMMIT_ENV: git_commit(root) or "unknown"}))
    entrypoint = shlex.join([python or default_python(where), "-m", "workflows.cli", command, *args])
    client = jobs_client(where)
    submitted = client.submit_job(entrypoint=entrypoint, runtime_env=env, submission_id=job_id,
                                  entrypoint_num_cpus=entrypoint_cpus, metadata={"centernet": command})
    write(f"tracking:   {tracking_uri or 'the cluster MLFLOW_TRACKING_URI (none set here)'}")
    write(f"status:     centernet submit --address {where} --status {submitted}")
    final = None
    if follow:
        follow_job_logs(client, submitted, write=write)
        final = wait_for_job(client, submitted, timeout_s=60)
        write(f"{submitted}: {final}")
    return Submitted(submitted, final)


def manage_job(address: str | None, *, status: str | None = None, stop: str | None = None,
               logs: str | None = None) -> str:
    """A job's status line, the result of stopping it, or its logs so far."""
    from workflows.ray_runtime import jobs_address, jobs_client, probe_address

    where = jobs_address(address)
    probe_address(where)
    client = jobs_client(where)
    job = status or stop or logs
    try:
        if status:
            info = client.get_job_info(status)
            return f"{status}: {info.status.value}" + (f" ({info.message})" if info.message else "")
        if stop:
            return f"{stop}: {'stop requested' if client.stop_job(stop) else 'not running'}"
        return client.get_job_logs(logs)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise UserError(f"no job {job!r} on the cluster at {where}") from None
        raise
