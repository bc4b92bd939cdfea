"""The end of a search in MLflow: every trial read back from its run, the best one, and what the
search's parent run gets — the best trial's settings and val AP (params, metrics), ``tune/trials.csv``
(one row per trial), ``tune/val_ap_vs_settings.png`` (val AP against each searched setting, one
point per trial) and ``tune/learning_curves.png`` (val AP per epoch of every trial).
"""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.tune_space import LR_KEY, SearchSpace
from workflows.tune_trial import COMPLETED, EPOCHS_DONE_TAG, FAILED, STOPPED, TRIAL_ID_TAG, TRIAL_STATE_TAG, TUNE_PARENT_TAG

ARTIFACT_DIR = "tune"
SETTING_PARAMS = {"hm": "loss_weights.hm", "wh": "loss_weights.wh", "reg": "loss_weights.reg",
                  LR_KEY: "effective_lr"}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as its MLflow run holds it."""

    trial_id: str
    run_id: str
    state: str  # completed | stopped_early | failed | running (not closed)
    epochs_done: int
    val_ap: float | None  # the last evaluation's COCO AP (what its checkpoint scores)
    settings: dict[str, float]  # hm, wh, reg, lr
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val AP), epochs from 1


def trial_runs(tracking_uri: str, experiment: str, parent_run_id: str) -> list[Any]:
    """The runs of the search ``parent_run_id``'s trials (deleted runs excluded)."""
    from workflows.tracking import find_runs

    return find_runs(tracking_uri, experiment, filter_string=f"tags.`{TUNE_PARENT_TAG}` = '{parent_run_id}'")


def remove_lost_trial_runs(tracking_uri: str, experiment: str, parent_run_id: str) -> int:
    """Delete the runs that no trial of the finished search owns: a trial started just before the
    driver was killed, and unknown to the experiment state the search resumed from, is rerun under
    a new id; its first run stays open without a state. Returns how many were deleted."""
    from workflows.tracking import client

    lost = [r for r in trial_runs(tracking_uri, experiment, parent_run_id)
            if r.info.status == "RUNNING" and TRIAL_STATE_TAG not in r.data.tags]
    for run in lost:
        client(tracking_uri).delete_run(run.info.run_id)
    return len(lost)


def trial_records(tracking_uri: str, experiment: str, parent_run_id: str) -> list[TrialRecord]:
    """Every trial of the search, ordered by trial id."""
    from workflows.tracking import client

    c = client(tracking_uri)
    records = []
    for run in trial_runs(tracking_uri, experiment, parent_run_id):
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        settings = {k: float(params[p]) for k, p in SETTING_PARAMS.items() if p in params}
        ap = metrics.get("val/AP")
        records.append(TrialRecord(
            trial_id=tags.get(TRIAL_ID_TAG, run.info.run_id), run_id=run.info.run_id,
            state=tags.get(TRIAL_STATE_TAG, "running"), epochs_done=int(tags.get(EPOCHS_DONE_TAG, 0)),
            val_ap=float(ap) if ap is not None and math.isfinite(ap) else None, settings=settings,
            curve=learning_curve(c, run.info.run_id)))
    return sorted(records, key=lambda r: r.trial_id)


def learning_curve(c: Any, run_id: str) -> list[tuple[int, float]]:
    """(epoch from 1, val AP) of each evaluation of a run: ``val/AP`` and ``epoch`` are logged at the
    same step at the end of each evaluated epoch."""
    epoch_at = {m.step: int(m.value) for m in c.get_metric_history(run_id, "epoch")}
    points = {epoch_at[m.step] + 1: m.value for m in c.get_metric_history(run_id, "val/AP") if m.step in epoch_at}
    return sorted(points.items())


def best_trial(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The trial with the highest final val AP among those that ended without failing."""
    scored = [r for r in records if r.state in (COMPLETED, STOPPED) and r.val_ap is not None]
    return max(scored, key=lambda r: (r.val_ap, r.epochs_done)) if scored else None


def write_trials_csv(records: Sequence[TrialRecord], path: Path) -> None:
    keys = sorted({k for r in records for k in r.settings}, key=list(SETTING_PARAMS).index)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial_id", "state", "epochs_done", "val_AP", *keys, "run_id"])
        for r in records:
            writer.writerow([r.trial_id, r.state, r.epochs_done, "" if r.val_ap is None else f"{r.val_ap:.6g}",
                             *(f"{r.settings[k]:.6g}" if k in r.settings else "" for k in keys), r.run_id])


def settings_figure(records: Sequence[TrialRecord], space: SearchSpace) -> Any:
    """Val AP against each searched setting (every setting when none varies), one point per
    trial; stopped trials hollow, log axes for log-uniform ranges."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = space.searched() or list(space.dims)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for state, style in ((COMPLETED, {"color": "tab:blue"}),
                             (STOPPED, {"facecolors": "none", "edgecolors": "tab:orange"})):
            pts = [(r.settings[key], r.val_ap) for r in records
                   if r.state == state and r.val_ap is not None and key in r.settings]
            if pts:
                ax.scatter(*zip(*pts), label="stopped early" if state == STOPPED else "completed", **style)
        dim = space.dims[key]
        if dim.kind == "loguniform":
            ax.set_xscale("log")
        if dim.kind in ("uniform", "loguniform"):  # the searched range (a little wider), so that the spread shows
            low, high = dim.values
            pad = (high - low) * 0.04
            ax.set_xlim(*((low / 1.2, high * 1.2) if dim.kind == "loguniform" else (low - pad, high + pad)))
        ax.set_xlabel(key)
        ax.set_ylabel("val AP")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(records: Sequence[TrialRecord]) -> Any:
    """Val AP per epoch of every trial on one plot; stopped trials dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in records:
        if r.curve:
            epochs, aps = zip(*r.curve)
            ax.plot(epochs, aps, marker="o", linestyle="--" if r.state == STOPPED else "-", label=r.trial_id)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("val AP")
    ax.grid(alpha=0.3)
    if len(records) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def report_search(tracking_uri: str, parent_run_id: str, records: Sequence[TrialRecord], space: SearchSpace,
                  *, status: str = "FINISHED") -> TrialRecord | None:
    """Log the end of the search into its parent run and close it; returns the best trial."""
    import matplotlib.pyplot as plt

    from workflows.tracking import finish_run, log_params

    best = best_trial(records)
    counts = {state: sum(r.state == state for r in records) for state in (COMPLETED, STOPPED, FAILED)}
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {f"trials_{k}": float(v) for k, v in counts.items()}
    if best is not None:
        params = {"best.trial_id": best.trial_id, "best.run_id": best.run_id,
                  **{f"best.{k}": v for k, v in best.settings.items()}}
        metrics["best_val_AP"] = float(best.val_ap or 0.0)
    log_params(tracking_uri, parent_run_id, params)
    with tempfile.TemporaryDirectory(prefix="centernet-tune-") as tmp:
        write_trials_csv(records, Path(tmp) / "trials.csv")
        for name, fig in (("val_ap_vs_settings.png", settings_figure(records, space)),
                          ("learning_curves.png", curves_figure(records))):
            fig.savefig(Path(tmp) / name, dpi=100)
            plt.close(fig)
        finish_run(tracking_uri, parent_run_id, status=status, artifacts=[(tmp, ARTIFACT_DIR)], metrics=metrics)
    return best
