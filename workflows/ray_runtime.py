"""Where jobs run: connecting to Ray (an in-process local instance or a cluster), the runtime
environment that carries settings to workers, and the Ray Jobs API for submitted jobs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# Variables forwarded from the driver (or the submitter) to every Ray worker when set.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "CENTERNET_GIT_COMMIT", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "MLFLOW_S3_ENDPOINT_URL")
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


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    env_vars: Mapping[str, str] | None = None,
    num_cpus: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Connect to Ray for the duration of the block.

    ``address=None``: an existing connection is reused (e.g. inside a submitted job, where
    ``RAY_ADDRESS`` points at the cluster), otherwise a local instance starts in process, with the
    dashboard off and bound to 127.0.0.1. ``address="auto"``, ``"host:6379"`` or
    ``"ray://host:10001"``: that cluster. ``env_vars`` go to every worker of a local instance through
    the job's runtime environment (on a cluster, pass them as the trainer's ``worker_runtime_env``).
    The connection this function opened is closed on exit.
    """
    import ray

    if ray.is_initialized():
        yield {"address": None, "started": False}
        return
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs.update(include_dashboard=False, num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                      runtime_env={"env_vars": dict(env_vars)} if env_vars else None)
    else:
        # On a cluster (or inside a submitted job, whose own runtime env Ray refuses to merge
        # with a driver's), the variables travel in the trainer's worker runtime env instead.
        kwargs["address"] = address
    ctx = ray.init(**kwargs)
    try:
        yield {"address": getattr(ctx, "address_info", {}).get("address"), "started": True}
    finally:
        ray.shutdown()


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
