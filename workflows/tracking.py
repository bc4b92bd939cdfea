"""MLflow tracking for training jobs: one run per job, written by the driver and by rank 0 only.

The driver creates the run (params, tags) and closes it (final checkpoint and manifest as
artifacts); the rank-0 training worker logs step and epoch metrics and preview images into the same
run through :class:`RunLogger`. With no ``MLFLOW_TRACKING_URI`` the store is a SQLite file in the
working directory (:func:`resolve_tracking_uri`); the URI reaches workers through Ray's runtime
environment (``workflows/ray_runtime.py``).
"""

from __future__ import annotations

import json
import logging
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
_log = logging.getLogger("centernet.tracking")


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
    late_metrics: Sequence[Any] = (),
) -> None:
    """Log ``(local_path, artifact_dir)`` artifacts, final ``metrics`` (step 0) and ``late_metrics``
    (``mlflow.entities.Metric``: what a worker's :class:`RunLogger` could not send), and close the
    run. MLflow's errors propagate (after its HTTP retries)."""
    c = client(tracking_uri)
    for local, artifact_path in artifacts:
        if Path(local).is_dir():
            c.log_artifacts(run_id, str(local), artifact_path)
        elif Path(local).is_file():
            c.log_artifact(run_id, str(local), artifact_path)
    batch = [*late_metrics, *metric_entities(metrics or {}, step=0)]
    for i in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics
        c.log_batch(run_id, metrics=batch[i:i + 1000])
    c.set_terminated(run_id, status=status)


def metric_entities(metrics: Mapping[str, float], step: int) -> list[Any]:
    """``mlflow.entities.Metric`` of the finite values of ``metrics`` at ``step``, stamped now, keys
    made valid for MLflow."""
    import math
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(_metric_key(key), float(value), now, int(step)) for key, value in metrics.items()
            if math.isfinite(float(value))]


class RunLogger:
    """Metric and artifact logging into an existing run (rank 0 inside the Ray worker; the demo) that
    outlives an outage of the MLflow server.

    ``log_metrics`` buffers; every ``flush_every`` metrics (or ``flush=True``) the buffer is handed to a
    background thread that sends it, in order, with ``log_batch`` (``log_figure``/``log_dict`` go the
    same way). When the server does not answer — after MLflow's own HTTP retries,
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` — the thread keeps what
    it could not send, warns once, and tries again every ``retry_interval_s`` until the server is
    back: the caller never waits for the server and never sees its errors. A request the server
    refuses (4xx: a bad value) is dropped with a warning instead. :meth:`flush` waits until everything
    handed over is sent; :meth:`close` also stops the thread and returns the metrics still unsent.
    """

    def __init__(self, tracking_uri: str, run_id: str, *, flush_every: int = 50, retry_interval_s: float = 5.0):
        import collections
        import threading

        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.flush_every = flush_every
        self.retry_interval_s = retry_interval_s
        self._client = client(tracking_uri)
        self._buffer: list[Any] = []
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()  # ("metrics", [Metric]) | ("call", fn)
        self._in_flight = False
        self._closing = False
        self._failing_since: float | None = None
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._send_loop, name=f"mlflow-logger-{run_id[:8]}", daemon=True)
        self._thread.start()

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, flush: bool = False) -> None:
        """Buffer ``metrics`` at ``step`` (non-finite values are left out); hand the buffer to the
        sender when it holds ``flush_every`` metrics or ``flush``. Never blocks on the server."""
        self._buffer += metric_entities(metrics, step)
        if flush or len(self._buffer) >= self.flush_every:
            self._hand_over()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Hand over the buffer and wait until everything is sent (at most ``timeout_s``); whether it was."""
        self._hand_over()
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout=timeout_s)

    def close(self, timeout_s: float | None = None) -> list[Any]:
        """:meth:`flush` (at most ``timeout_s``), stop the sender, and return the metrics it could not
        send (``mlflow.entities.Metric``; empty when everything arrived)."""
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            unsent = [m for kind, item in self._queue if kind == "metrics" for m in item]
            self._queue.clear()
        return unsent

    @property
    def pending(self) -> int:
        """Operations handed over and not sent yet (metric batches, artifacts)."""
        with self._cond:
            return len(self._queue) + int(self._in_flight)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Render ``figure`` now (PNG) and send it as ``artifact_file`` in the background."""
        import io

        data = io.BytesIO()
        figure.savefig(data, format="png")
        self._submit("call", lambda: self._log_bytes(data.getvalue(), artifact_file))

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        payload = json.loads(json.dumps(dict(data)))  # a copy: the caller may change ``data``
        self._submit("call", lambda: self._client.log_dict(self.run_id, payload, artifact_file))

    def _log_bytes(self, data: bytes, artifact_file: str) -> None:
        import tempfile

        directory, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="centernet-artifact-") as tmp:
            (Path(tmp) / name).write_bytes(data)
            self._client.log_artifact(self.run_id, str(Path(tmp) / name), directory or None)

    def _hand_over(self) -> None:
        batch, self._buffer = self._buffer, []
        for i in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics
            self._submit("metrics", batch[i:i + 1000])

    def _submit(self, kind: str, item: Any) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError(f"RunLogger of run {self.run_id} is closed")
            self._queue.append((kind, item))
            self._cond.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if self._closing:
                    return
                kind, item = self._queue[0]
                self._in_flight = True
            try:
                if kind == "metrics":
                    self._client.log_batch(self.run_id, metrics=item)
                else:
                    item()
            except Exception as exc:
                if not _worth_retrying(exc):
                    _log.warning("warning: MLflow refused a logging request of run %s, dropped: %s", self.run_id,
                                 _one_line(exc))
                    self._done_with_first()
                    continue
                with self._cond:
                    self._in_flight = False
                    self.last_error = _one_line(exc)
                    if self._failing_since is None:
                        import time

                        self._failing_since = time.monotonic()
                        _log.warning("warning: MLflow at %s does not answer; metrics are kept and sent when it is "
                                     "back (retrying every %.0f s): %s", self.tracking_uri, self.retry_interval_s,
                                     self.last_error)
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._closing, timeout=self.retry_interval_s)
                continue
            self._done_with_first()

    def _done_with_first(self) -> None:
        import time

        with self._cond:
            if self._queue:  # close() may have taken it back meanwhile
                self._queue.popleft()
            self._in_flight = False
            if self._failing_since is not None:
                _log.warning("MLflow at %s answers again after %.0f s; sending what was kept", self.tracking_uri,
                             time.monotonic() - self._failing_since)
                self._failing_since = None
            self._cond.notify_all()


def _worth_retrying(exc: Exception) -> bool:
    """A connection failure or a server error (5xx, 429) may pass; a refused request (4xx) will not."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return True
    status = exc.get_http_status_code()
    return status >= 500 or status == 429


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


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
