"""Reaching the MLflow store for users' commands, with one-line errors instead of tracebacks.

A missing SQLite file, an unreachable server, an unknown run, model name, version or alias each
becomes a :class:`workflows.errors.UserError` naming what was asked for and where it was looked
up. (Training writes runs through ``workflows.tracking``; this module reads them back.)
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workflows.errors import UserError
from workflows.tracking import TRACKING_URI_ENV, resolve_tracking_uri

_REACH_TIMEOUT_S = 5.0


def check_store(tracking_uri: str) -> None:
    """``UserError`` unless ``tracking_uri`` is an existing SQLite file or a server that answers.

    MLflow would otherwise create an empty database for a mistyped path, or retry an unreachable
    server for minutes before failing.
    """
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise UserError(f"no MLflow store at {path} (tracking URI {tracking_uri}): run from the directory "
                            f"holding mlruns.db or set {TRACKING_URI_ENV}")
    elif tracking_uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=_REACH_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # it answered: reachable
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"cannot reach the MLflow tracking server {tracking_uri} ({reason}); start it or "
                            f"set {TRACKING_URI_ENV}") from None


def store_client(tracking_uri: str | None = None) -> tuple[str, Any]:
    """(tracking URI, ``MlflowClient``) for ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI`` or
    ``sqlite:///<cwd>/mlruns.db``), after :func:`check_store`."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or resolve_tracking_uri()
    check_store(uri)
    return uri, MlflowClient(tracking_uri=uri, registry_uri=uri)


def is_not_found(exc: Exception) -> bool:
    """Whether an ``MlflowException`` says the thing asked for does not exist."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower() \
        or "does not exist" in str(exc).lower()


def get_run(client: Any, tracking_uri: str, run_id: str) -> Any:
    """The run ``run_id``; ``UserError`` naming the store when it does not exist there."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if is_not_found(exc):
            raise UserError(f"run {run_id!r} not found in the MLflow store {tracking_uri}; check the run id "
                            f"or set {TRACKING_URI_ENV} to the store that holds it") from None
        raise


def get_model_version(client: Any, tracking_uri: str, name: str, *, version: str | None = None,
                      alias: str | None = None) -> Any:
    """Version ``version`` (or the one behind ``alias``) of registered model ``name``; ``UserError``
    saying whether the name, the version or the alias is unknown, and what exists."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            raise UserError(f"no registered model named {name!r} in {tracking_uri} (register one with "
                            "`centernet register --run RUN_ID --name NAME`)") from None
        raise
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not is_not_found(exc) and getattr(exc, "error_code", "") != "INVALID_PARAMETER_VALUE":
            raise
        if alias is not None:
            aliases = sorted(getattr(registered, "aliases", {}) or {})
            raise UserError(f"registered model {name!r} has no alias {alias!r} (aliases: "
                            f"{', '.join(aliases) or 'none'})") from None
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        raise UserError(f"registered model {name!r} has no version {version!r} (versions: "
                        f"{', '.join(map(str, versions)) or 'none'})") from None


@contextlib.contextmanager
def fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.pyfunc.log_model`` & co.) at ``tracking_uri`` for the
    block, then restore both its global URI and ``$MLFLOW_TRACKING_URI`` exactly as they were."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_env = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = previous_env
