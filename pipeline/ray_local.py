"""The one place that starts an embedded (local, in-process) Ray instance.

Every command that runs without ``--address`` gets its Ray from :func:`local_ray`: a single-node
instance whose node address is 127.0.0.1 and whose servers (GCS, raylet, workers, object manager,
dashboard and its agent, metrics) all listen on loopback only, with the dashboard (and the state API
behind it, which Ray Tune and Train's placement-group cleaner use) on 127.0.0.1. Ray 2.60's token
authentication stays as Ray sets it (on by default). The session directory (logs, sockets) is
removed after a clean shutdown and kept, for its logs, after a failure.

Why the environment variable: Ray replaces a requested ``127.0.0.1`` node address by the machine's
interface address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (then it binds every server to the
node address, i.e. loopback). The variable is read by Ray at import, so it is set both in the
environment (for the processes Ray starts) and on Ray's already-imported constant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
STATE_API_ENV = "RAY_API_SERVER_ADDRESS"  # where Ray's state API (the dashboard) is, for every worker
# Ray loggers that print internal chatter at INFO/WARNING on every start (token-auth notice,
# "Started a local Ray instance", Train's worker-group lines); shown with verbose=True.
_CHATTY_LOGGERS = ("ray", "ray.train", "ray.tune", "ray.data")


@dataclass(frozen=True)
class LocalRay:
    """What :func:`local_ray` started: the GCS address, the dashboard URL and the session dir."""

    address: str
    dashboard_url: str | None
    session_dir: str


def _free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the dashboard, whose address must be known before start)."""
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def keep_ray_on_loopback() -> None:
    """Make Ray resolve this node's address to 127.0.0.1 (see the module docstring)."""
    os.environ[_CLUSTER_ENV] = "0"
    with contextlib.suppress(ImportError, AttributeError):
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def quiet_ray_loggers(verbose: bool) -> None:
    """Ray's own INFO/WARNING lines only with ``verbose``; errors always."""
    level = logging.INFO if verbose else logging.ERROR
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def local_ray(
    *,
    num_cpus: int | None = None,
    dashboard: bool = True,
    verbose: bool = False,
    env_vars: dict[str, str] | None = None,
    temp_dir: str | None = None,
) -> Iterator[LocalRay]:
    """Start a local Ray instance on loopback for the duration of the block, then shut it down.

    Args:
        num_cpus: CPUs Ray may schedule on (default: all of this machine's).
        dashboard: run the dashboard (127.0.0.1 only) and with it the state API.
        verbose: forward worker output and Ray's INFO logs to this process.
        env_vars: environment variables for every worker (the job's runtime environment).
        temp_dir: Ray's temporary root (default: Ray's own, ``$RAY_TMPDIR`` or /tmp/ray).
    """
    import ray

    if ray.is_initialized():
        raise RuntimeError("local_ray: Ray is already initialised in this process")
    keep_ray_on_loopback()
    quiet_ray_loggers(verbose)
    kwargs: dict = dict(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                        _node_ip_address=LOOPBACK, log_to_driver=verbose,
                        logging_level=logging.INFO if verbose else logging.ERROR)
    env_vars = dict(env_vars or {})
    if dashboard:
        port = _free_loopback_port()
        kwargs.update(dashboard_host=LOOPBACK, dashboard_port=port)
        # The state API inside workers (Ray Train's placement-group cleaner) finds its cluster through
        # this variable; without it, it guesses from running processes and fails when the machine runs
        # other Ray instances, leaving the placement groups of stopped runs (e.g. early-stopped Tune
        # trials) reserved for good.
        env_vars.setdefault(STATE_API_ENV, f"http://{LOOPBACK}:{port}")
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": env_vars}
    if temp_dir:
        kwargs["_temp_dir"] = temp_dir
    ctx = ray.init(**kwargs)
    info = ctx.address_info
    session_dir = info.get("session_dir", "")
    url = ctx.dashboard_url or None
    clean = False
    try:
        yield LocalRay(info.get("gcs_address") or info.get("address", ""),
                       f"http://{url}" if url and "://" not in url else url, session_dir)
        clean = True
    finally:
        ray.shutdown()
        if clean and session_dir and os.path.basename(session_dir).startswith("session_"):
            shutil.rmtree(session_dir, ignore_errors=True)
