"""MLflow tracking for training jobs: one run per job, written by the driver and by rank 0 only.

The driver creates the run (params, tags) and closes it (final checkpoint and manifest as
artifacts); the rank-0 training worker logs step and epoch metrics and preview images into the same
run through :class:`RunLogger`. With no ``MLFLOW_TRACKING_URI`` the store is a SQLite file in the
working directory (:func:`resolve_tracking_uri`); the URI reaches workers through Ray's runtime
environment (``workflows/ray_runtime.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_DB_NAME = "mlruns.db"
DEFAULT_EXPERIMENT = "centernet"
GIT_COMMIT_ENV = "CENTERNET_GIT_COMMIT"
_MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(cwd: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlruns.db`` (an absolute path)."""
    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if uri:
        return uri
    base = Path(cwd or os.getcwd()).resolve()
    return f"sqlite:///{base / DEFAULT_DB_NAME}"


def _artifact_root(tracking_uri: str) -> str | None:
    """An absolute artifact location next to a SQLite/file store (so workers in other working
    directories write to the same place); ``None`` lets a tracking server decide."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        return None
    return None


def client(tracking_uri: str):
    """An ``MlflowClient`` bound to ``tracking_uri``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name``, created (with an absolute artifact location) if missing."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=_artifact_root(tracking_uri))
    except Exception:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (this project by default), if any.

    ``$CENTERNET_GIT_COMMIT`` wins: a job submitted to a cluster runs from an uploaded copy of the
    working directory without ``.git``, so the submitter passes its commit along.
    """
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat ``{"a.b": "value"}`` strings as MLflow params take them."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:_MAX_PARAM_LENGTH]
    return flat


def start_run(
    tracking_uri: str,
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    run_id: str | None = None,
) -> str:
    """Create the job's run (or reopen ``run_id`` when resuming) and log params and tags.

    On a resumed run, params already logged keep their value (MLflow forbids changing them); the
    changed ones are recorded as ``resume.<name>`` tags instead.
    """
    c = client(tracking_uri)
    if run_id is None:
        run = c.create_run(ensure_experiment(tracking_uri, experiment), run_name=run_name)
        run_id = run.info.run_id
        existing: dict[str, str] = {}
    else:
        run = c.get_run(run_id)
        existing = dict(run.data.params)
        c.update_run(run_id, status="RUNNING")
    log_params(tracking_uri, run_id, params, tags=tags, existing=existing)
    return run_id


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any], *, tags: Mapping[str, str] | None = None,
               existing: Mapping[str, str] | None = None) -> None:
    """Log ``params`` (flattened) and ``tags`` into a run. Params it already has (``existing``; read
    from the run when ``None``) keep their value, as MLflow requires; changed ones are recorded as
    ``resume.<name>`` tags instead."""
    from mlflow.entities import Param, RunTag

    c = client(tracking_uri)
    if existing is None:
        existing = dict(c.get_run(run_id).data.params)
    flat = flatten_params(params)
    new_params = [Param(k, v) for k, v in flat.items() if k not in existing]
    changed = {f"resume.{k}": v for k, v in flat.items() if k in existing and existing[k] != v}
    all_tags = [RunTag(k, str(v)) for k, v in {**(tags or {}), **changed}.items()]
    for i in range(0, max(len(new_params), 1), 100):
        c.log_batch(run_id, params=new_params[i:i + 100], tags=all_tags if i == 0 else [])


def finish_run(
    tracking_uri: str,
    run_id: str,
    *,
    status: str = "FINISHED",
    artifacts: Sequence[tuple[str | Path, str]] = (),
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Log ``(local_path, artifact_dir)`` artifacts and final metrics, and close the run."""
    c = client(tracking_uri)
    for local, artifact_path in artifacts:
        if Path(local).is_dir():
            c.log_artifacts(run_id, str(local), artifact_path)
        elif Path(local).is_file():
            c.log_artifact(run_id, str(local), artifact_path)
    if metrics:
        RunLogger(tracking_uri, run_id).log_metrics(metrics, step=0, flush=True)
    c.set_terminated(run_id, status=status)


class RunLogger:
    """Buffered metric logging into an existing run (used by rank 0 inside the Ray worker)."""

    def __init__(self, tracking_uri: str, run_id: str, *, flush_every: int = 50):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.flush_every = flush_every
        self._client = client(tracking_uri)
        self._buffer: list[Any] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, flush: bool = False) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                self._buffer.append(Metric(_metric_key(key), value, now, int(step)))
        if flush or len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self._client.log_batch(self.run_id, metrics=batch)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self._client.log_dict(self.run_id, dict(data), artifact_file)


def _metric_key(key: str) -> str:
    """MLflow keys allow alphanumerics, ``_ - . / :`` and spaces; map anything else to ``_``."""
    return "".join(ch if ch.isalnum() or ch in "_-./: " else "_" for ch in key)


def find_runs(tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT, filter_string: str = "") -> list[Any]:
    """Runs of ``experiment`` (newest first), optionally filtered (MLflow search syntax)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(c.search_runs([exp.experiment_id], filter_string=filter_string,
                              order_by=["attributes.start_time DESC"]))


def preview_figure(
    images: Any,  # [N, 3, H, W] float32, normalised BGR
    detections: Any,  # [N, K, 6] output-map pixels
    heatmaps: Any,  # [N, C, H/4, W/4] probabilities
    class_names: Sequence[str],
    *,
    down_ratio: int = 4,
    score_threshold: float = 0.3,
):
    """A matplotlib figure: each image with its predicted boxes above, its heatmap (max over
    classes) below."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from centernet.transforms import COCO_MEAN_BGR, COCO_STD_BGR

    n = int(images.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
    for i in range(n):
        img = images[i].detach().cpu().numpy().transpose(1, 2, 0) * COCO_STD_BGR + COCO_MEAN_BGR
        axes[0, i].imshow(np.clip(img[..., ::-1], 0, 1))
        for x1, y1, x2, y2, score, cls in detections[i].detach().cpu().numpy():
            if score < score_threshold:
                continue
            x1, y1, x2, y2 = (v * down_ratio for v in (x1, y1, x2, y2))
            axes[0, i].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
            name = class_names[int(cls)] if 0 <= int(cls) < len(class_names) else str(int(cls))
            axes[0, i].text(x1, y1, f"{name} {score:.2f}", color="yellow", fontsize=7, va="bottom")
        axes[1, i].imshow(heatmaps[i].detach().cpu().float().amax(0).numpy(), vmin=0, vmax=1, cmap="magma")
        for ax in axes[:, i]:
            ax.set_axis_off()
    fig.tight_layout()
    return fig
