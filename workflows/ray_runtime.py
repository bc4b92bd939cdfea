"""Where jobs run: connecting to Ray (an in-process local instance or a cluster), the runtime
environment that carries settings to workers, and the Ray Jobs API for submitted jobs."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.errors import UserError

# Variables forwarded from the driver (or the submitter) to every Ray worker when set.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "CENTERNET_GIT_COMMIT", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_EC2_METADATA_DISABLED", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")
DEFAULT_JOBS_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded with the working directory of a submitted job.
WORKING_DIR_EXCLUDES = [".git", ".venv", "venv", "**/__pycache__", "*.db", "mlruns", "mlartifacts",
                        "ray_results", "demo_output", "data", "shards", ".pytest_cache", "*.egg-info",
                        "*.pt", "*.pth", "*.arrow"]


def worker_env_vars(tracking_uri: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for Ray workers: the MLflow tracking URI and friends."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra or {})
    return env


def probe_address(address: str | None, *, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when a Ray address (``host:port``, ``ray://host:port`` or an
    ``http://`` dashboard address) does not accept connections; Ray itself would retry for minutes.
    ``None`` and ``"auto"`` are left to Ray."""
    import socket
    from urllib.parse import urlsplit

    if not address or address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parts.hostname or not parts.port:
        raise UserError(f"--address {address}: expected host:port, ray://host:port or http://host:port")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot reach the Ray cluster at {address} ({reason}); is its head running "
                        "and the address right?") from None


@dataclass(frozen=True)
class RaySession:
    """The Ray a command runs on: its address, whether this process started it, where its logs
    are and a scratch directory every worker sees (the local session's; ``None`` on a cluster)."""

    address: str | None
    started: bool
    log_dir: str | None
    scratch_dir: str | None = None


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    env_vars: Mapping[str, str] | None = None,
    num_cpus: int | None = None,
    verbose: bool = False,
    dashboard: bool = True,
    ship_code: bool = False,
) -> Iterator[RaySession]:
    """Ray for the duration of the block.

    An existing connection is reused. ``address=None`` and no ``$RAY_ADDRESS``: the embedded
    instance of :func:`pipeline.ray_local.local_ray` (loopback only, dashboard on 127.0.0.1), with
    ``env_vars`` for every worker. ``address="auto"``, ``"host:6379"`` or ``"ray://host:10001"``
    (or ``$RAY_ADDRESS``, as inside a submitted job): that cluster; an unreachable one is a
    :class:`workflows.errors.UserError`. ``ship_code``: send this project's packages to the
    cluster's workers (``py_modules``) for code that runs in plain Ray tasks. The connection this
    function opened is closed on exit.
    """
    import ray

    from pipeline.ray_local import local_ray, quiet_ray_loggers

    if ray.is_initialized():
        yield RaySession(None, False, None)
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        with local_ray(num_cpus=num_cpus, verbose=verbose, dashboard=dashboard,
                       env_vars=dict(env_vars or {})) as local:
            yield RaySession(local.address, True, f"{local.session_dir}/logs", local.session_dir)
        return
    quiet_ray_loggers(verbose)
    probe_address(address)
    # On a cluster named by ``address`` the job's runtime env carries ``env_vars`` (and the code) to
    # every task and actor: the nodes know nothing of the user's tracking URI or S3 credentials.
    # Inside a submitted job (``$RAY_ADDRESS``), whose own runtime env Ray refuses to merge with a
    # driver's, the submitter's env already holds them.
    runtime_env = job_runtime_env_for(address, env_vars, ship_code=ship_code)
    try:
        ray.init(address=address, log_to_driver=verbose, runtime_env=runtime_env,
                 logging_level=logging.INFO if verbose else logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS")
        hint = ("; if the cluster uses token authentication (the default of `ray start` in Ray 2.60), set "
                "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to its token file"
                if os.environ.get("RAY_AUTH_MODE") != "token" else "")
        raise UserError(f"cannot connect to the Ray cluster at {where}: {' '.join(str(exc).split())[:300]}{hint}") \
            from None
    try:
        yield RaySession(address or os.environ.get("RAY_ADDRESS"), True, None)
    finally:
        ray.shutdown()


def job_runtime_env_for(address: str | None, env_vars: Mapping[str, str] | None, *,
                        ship_code: bool) -> dict[str, Any] | None:
    """The runtime env of a driver connecting to ``address``: ``env_vars`` and, with ``ship_code``,
    this project's packages; ``None`` without an explicit address or anything to carry."""
    if not address:
        return None
    env: dict[str, Any] = {}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    if ship_code:
        env["py_modules"] = project_modules()
    return env or None


def project_modules() -> list[str]:
    """The directories of this project's packages (for a runtime environment's ``py_modules``)."""
    import centernet
    import pipeline
    import workflows

    return [str(Path(m.__file__).parent) for m in (centernet, pipeline, workflows)]


def job_runtime_env(
    working_dir: str | Path,
    env_vars: Mapping[str, str],
    *,
    excludes: list[str] | None = None,
    pip: list[str] | None = None,
) -> dict[str, Any]:
    """Runtime environment of a submitted job: the project directory (uploaded, minus data,
    virtual environments and stores) and the environment variables workers need."""
    env: dict[str, Any] = {
        "working_dir": str(Path(working_dir).resolve()),
        "excludes": WORKING_DIR_EXCLUDES + list(excludes or []),
        "env_vars": dict(env_vars),
    }
    if pip:
        env["pip"] = list(pip)
    return env


def jobs_address(address: str | None) -> str:
    """The Ray Jobs API address: ``address``, else ``$RAY_ADDRESS`` when it is an HTTP address,
    else http://127.0.0.1:8265. A bare ``host:port`` gets ``http://``."""
    addr = address or os.environ.get("RAY_JOBS_ADDRESS") or ""
    if not addr:
        env = os.environ.get("RAY_ADDRESS", "")
        addr = env if env.startswith(("http://", "https://")) else DEFAULT_JOBS_ADDRESS
    if "://" not in addr:
        addr = f"http://{addr}"
    return addr


def jobs_client(address: str | None = None):
    """A ``JobSubmissionClient`` for the cluster's dashboard address."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(jobs_address(address))


def follow_job_logs(client: Any, job_id: str, write=print) -> None:
    """Stream a job's logs until it ends."""
    import asyncio

    async def _tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            write(lines.rstrip("\n"))

    asyncio.run(_tail())


def wait_for_job(client: Any, job_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0) -> str:
    """Block until the job reaches a terminal state; returns it (``"SUCCEEDED"``, ``"FAILED"``,
    ``"STOPPED"``). ``TimeoutError`` after ``timeout_s``."""
    import time

    from ray.job_submission import JobStatus

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            return str(status.value)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status.value} after {timeout_s} s")
        time.sleep(poll_s)
