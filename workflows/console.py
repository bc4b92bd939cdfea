"""What the command line shows: a quiet, useful log by default, everything with ``--verbose``.

Our own messages go through the ``centernet`` logger (``logging.getLogger("centernet.<module>")``),
shown as plain lines. Quiet means: no Python warnings from libraries (deprecations, future changes), MLflow's and
Alembic's INFO lines (store migrations), Ray's internal INFO/WARNING lines and worker output
(progress comes from our own display); errors always reach the user.
"""

from __future__ import annotations

import logging
import os
import warnings

_NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "botocore", "filelock", "matplotlib", "PIL", "git",
                  "ray", "ray.train", "ray.tune", "ray.data", "prefect", "httpx", "numexpr")
PROJECT_LOGGER = "centernet"  # what the commands say: what was found, where results go
VERBOSE_FLAGS = ("--verbose", "-v")
VERBOSE_HELP = "Show everything: library logs, Ray worker output, full tracebacks."


def configure_output(verbose: bool) -> None:
    """Set warnings and library log levels for a command run (called once by the CLI), and show
    the project's own log (logger ``centernet``) as plain lines on stderr."""
    ours = logging.getLogger(PROJECT_LOGGER)
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    ours.propagate = False
    level = logging.INFO if verbose else logging.ERROR
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read when mlflow configures its loggers
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    # Subprocesses (Ray workers, the MLflow model server) inherit these.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def command_path(name: str) -> str:
    """How to run ``name`` (e.g. ``mlflow``) from the user's shell: the bare name when it is on
    ``PATH``, else its path next to this Python (a virtual environment that is not activated)."""
    import shutil
    import sys
    from pathlib import Path

    if shutil.which(name):
        return name
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on ``tracking_uri``, bound to loopback."""
    return f"{command_path('mlflow')} ui --backend-store-uri {tracking_uri} --host 127.0.0.1"
