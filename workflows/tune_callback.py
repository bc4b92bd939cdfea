"""What the search's driver does while Tune runs: log each epoch Tune accepted into its trial's
MLflow run, close the run as the trial ends, log one line per ended trial, and keep the progress
board's trial table current.

:class:`SearchCallback` is a Ray Tune callback (it runs in the driver). Tune pickles it with the
experiment and restores that copy when a search is resumed, so it keeps only plain settings and
derives everything it shows from the trials Tune passes to each call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback

from workflows.tune_trial import (
    COMPLETED,
    FAILED,
    STOPPED,
    TrialSpec,
    close_trial_run,
    find_trial_run,
    log_epoch_metrics,
    trial_state,
)

log = logging.getLogger("centernet.tune")
RUNNING, PENDING = "running", "pending"
_STATE_WORDS = {RUNNING: "running", COMPLETED: "done", STOPPED: "stopped", FAILED: "failed", PENDING: "pending"}


def epochs_done(trial: Any) -> int:
    """Epochs a trial has finished (its last report's ``epochs_done``)."""
    return int((trial.last_result or {}).get("epochs_done", 0) or 0)


def val_ap(trial: Any) -> float | None:
    """The trial's last reported val AP (``None`` before its first evaluation)."""
    value = (trial.last_result or {}).get("val_AP")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0 else None


def current_state(trial: Any, epochs: int) -> str:
    """A trial's state for the table: pending, running, done, stopped (early) or failed."""
    if trial.status == "ERROR":
        return FAILED
    if trial.status == "TERMINATED":
        return trial_state(False, epochs_done(trial), epochs)
    return RUNNING if trial.status == "RUNNING" else PENDING


def trial_rows(trials: Sequence[Any], epochs: int) -> list[dict[str, Any]]:
    """One row per trial: id, state, epochs done, last val AP."""
    return [{"trial_id": t.trial_id, "state": current_state(t, epochs), "epochs_done": epochs_done(t),
             "val_AP": val_ap(t)} for t in trials]


def trials_line(state: dict[str, Any]) -> str:
    """The progress line of a search, e.g. ``2 running, 1 done, 1 stopped, 0 failed, 4 pending;
    best val AP 0.0312 (a1b2c_00002)`` from the board's ``trials`` rows."""
    rows = state["progress"].get("trials", [])
    counts = {word: 0 for word in _STATE_WORDS.values()}
    for row in rows:
        counts[_STATE_WORDS[row["state"]]] += 1
    text = ", ".join(f"{n} {word}" for word, n in counts.items() if n or word in ("running", "done"))
    scored = [r for r in rows if r["val_AP"] is not None]
    if scored:
        best = max(scored, key=lambda r: r["val_AP"])
        text += f"; best val AP {best['val_AP']:.4f} ({best['trial_id']})"
    return text


def finished_trials(state: dict[str, Any]) -> int:
    """How many trials of the board's table have ended (the progress bar's position)."""
    return sum(r["state"] in (COMPLETED, STOPPED, FAILED) for r in state["progress"].get("trials", []))


def settings_text(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


class SearchCallback(Callback):
    """Closes trial runs and publishes the trial table (see the module docstring).

    ``artifacts``: ``(local path, artifact dir)`` logged into every trial's run when it ends (the
    datasets' manifests, as a training run has them). ``board``: the progress actor's name.
    """

    def __init__(self, spec: TrialSpec, *, epochs: int, board: str | None,
                 artifacts: Sequence[tuple[str, str]] = ()):
        self.spec, self.epochs, self.board_name = spec, epochs, board
        self.artifacts = list(artifacts)
        self._board: Any | None = None
        self._runs: dict[str, str] = {}  # trial id -> its MLflow run id

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_board"] = None  # an actor handle means nothing in the Ray session that restores this
        state["_runs"] = {}
        return state

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
        try:
            if trial.trial_id not in self._runs:
                run = find_trial_run(self.spec.tracking_uri, self.spec.experiment, self.spec.parent_run_id,
                                     trial.trial_id)
                if run is not None:
                    self._runs[trial.trial_id] = run.info.run_id
            if trial.trial_id in self._runs:
                log_epoch_metrics(self.spec.tracking_uri, self._runs[trial.trial_id], result)
        except Exception as exc:  # never let tracking stop the search
            log.warning("warning: could not log epoch %s of trial %s to MLflow (%s)", result.get("epochs_done"),
                        trial.trial_id, " ".join(str(exc).split())[:200])
        self._publish(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, error=False, trials=trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end(trial, error=True, trials=trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Close the run of every ended trial not closed yet (e.g. the driver stopped in between)."""
        for trial in trials:
            if trial.status in ("TERMINATED", "ERROR"):
                self._close(trial, current_state(trial, self.epochs))
        self._publish(trials)

    def _end(self, trial: Any, *, error: bool, trials: list[Any]) -> None:
        done = epochs_done(trial)
        state = trial_state(error, done, self.epochs)
        self._close(trial, state)
        ap = val_ap(trial)
        what = {COMPLETED: "done", STOPPED: "stopped early", FAILED: "failed"}[state]
        log.info("trial %s %s after %d/%d epochs: val AP %s (%s)", trial.trial_id, what, done, self.epochs,
                 "-" if ap is None else f"{ap:.4f}", settings_text(trial.config))
        self._publish(trials, ended={trial.trial_id: state})

    def _close(self, trial: Any, state: str) -> None:
        try:
            close_trial_run(self.spec, trial.trial_id, state=state, epochs_done=epochs_done(trial),
                            artifacts=self.artifacts)
        except Exception as exc:  # never let tracking stop the search; the end of the search retries
            log.warning("warning: could not close the MLflow run of trial %s (%s)", trial.trial_id,
                        " ".join(str(exc).split())[:200])

    def _publish(self, trials: list[Any], ended: dict[str, str] | None = None) -> None:
        """Write the trial table to the progress board (``ended``: states Tune has not set yet)."""
        if not self.board_name:
            return
        rows = trial_rows(trials, self.epochs)
        for row in rows:
            row["state"] = (ended or {}).get(row["trial_id"], row["state"])
        try:
            if self._board is None:
                import ray

                self._board = ray.get_actor(self.board_name)
            self._board.update.remote({"trials": rows})
        except Exception:  # no board (e.g. a restored search without display): nothing to show
            self._board = None
