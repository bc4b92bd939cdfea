"""Where Prefect keeps its state and how much it says, set before Prefect is imported.

Without ``PREFECT_API_URL`` a flow run starts Prefect's ephemeral API for the duration of the
run, on an SQLite store in ``$PREFECT_HOME`` (``~/.prefect/prefect.db``), the same store that
``prefect server start`` shows in its UI. Task results and cache records go to the pipeline's
results directory, local or a URI. Quiet unless ``verbose``: Prefect's logs at CRITICAL (the
command reports errors as one line), no telemetry (works offline).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Defaults for variables Prefect reads at import; a value the user set wins.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a busy laptop starts it slowly
}


def configure_prefect(verbose: bool) -> None:
    """Set Prefect's environment defaults and log level (before ``import prefect``)."""
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    level = "INFO" if verbose else "CRITICAL"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("PREFECT_LOGGING_SERVER_LEVEL", "WARNING" if verbose else "CRITICAL")


def quiet_prefect_loggers(verbose: bool) -> None:
    """Prefect's loggers at ``$PREFECT_LOGGING_LEVEL`` (CRITICAL unless ``verbose`` or set by the
    user), again after ``configure_output``, which sets library loggers to ERROR: a failed step is
    reported by the command, in one line."""
    import logging

    level = os.environ.get("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "CRITICAL").upper()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.server"):
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def result_storage(results_dir: str) -> Iterator[None]:
    """Task results and cache records under the local ``results_dir`` for the block (Prefect's
    local storage path). A URI is left to the tasks' storage block
    (:func:`workflows.flow.remote_results.result_storage_block`)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from workflows.flow.remote_results import is_uri

    if is_uri(results_dir):
        yield
        return
    os.makedirs(results_dir, exist_ok=True)
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: results_dir}):
        yield
