"""The search options (``TuneConfig``), the split of a ``--config`` file between training and search,
and the pure pieces of the search's bookkeeping: trial states, the progress line, the best trial
and the trials CSV."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from workflows.train_config import TrainConfig
from workflows.tune import scheduler
from workflows.tune_callback import current_state, trial_rows, trials_line
from workflows.tune_config import TuneConfig, split_values
from workflows.tune_report import TrialRecord, best_trial, write_trials_csv
from workflows.tune_trial import COMPLETED, FAILED, STOPPED, trial_state


def test_defaults_and_checks_name_the_field():
    cfg = TuneConfig()
    assert (cfg.trials, cfg.search, cfg.scheduler, cfg.grace_period, cfg.reduction_factor) == (8, "optuna", "asha", 1, 2)
    for kwargs, phrase in [({"trials": 0}, "trials: must be an integer >= 1, got 0"),
                           ({"reduction_factor": 1}, "reduction_factor: must be an integer >= 2"),
                           ({"max_concurrent": 0}, "max_concurrent: must be an integer >= 1"),
                           ({"search": "grid"}, "search: must be one of optuna, random, got 'grid'"),
                           ({"scheduler": "pbt"}, "scheduler: must be one of asha, fifo"),
                           ({"name": "a/b"}, "name: must be a non-empty string without '/'"),
                           ({"register": " "}, "register: a model name is required")]:
        with pytest.raises(ValueError) as err:
            TuneConfig(**kwargs)
        assert phrase in str(err.value)
    with pytest.raises(ValueError, match="unknown key 'trails'"):
        TuneConfig.from_dict({"trails": 3})


def test_asha_epochs_default_to_the_trials_epochs_and_must_leave_room_to_stop():
    assert TuneConfig().asha_max_epochs(10) == 10
    assert TuneConfig(max_epochs=6).asha_max_epochs(10) == 6
    with pytest.raises(ValueError, match="max_epochs: 12 is more than the trials' --epochs 10"):
        TuneConfig(max_epochs=12).asha_max_epochs(10)
    with pytest.raises(ValueError, match="grace_period: 3 epochs leaves ASHA nothing to stop in 3 epochs"):
        TuneConfig(grace_period=3).asha_max_epochs(3)


def test_asha_lets_trials_that_reach_their_epochs_end_by_themselves():
    train = TrainConfig(data="x", epochs=3)
    full = scheduler(train, TuneConfig(grace_period=1, reduction_factor=2))
    assert (full._time_attr, full._metric, full._mode, full._max_t, full._stop_last_trials) == (
        "epochs_done", "val_AP", "max", 3, False)
    assert [rung[0] for rung in full._brackets[0]._rungs] == [2, 1]  # rungs at 1 and 2 finished epochs
    assert scheduler(train, TuneConfig(max_epochs=2))._stop_last_trials is True
    assert type(scheduler(train, TuneConfig(scheduler="fifo"))).__name__ == "FIFOScheduler"


def test_a_config_file_splits_into_training_and_search_options():
    train, tune = split_values({"data": "d", "epochs": 3, "trials": 4, "name": "s", "space": "sp.yaml"},
                               source="c.yaml")
    assert train == {"data": "d", "epochs": 3} and tune == {"trials": 4, "name": "s", "space": "sp.yaml"}
    with pytest.raises(ValueError, match="c.yaml: unknown key 'trails'; valid keys: .*epochs.*trials"):
        split_values({"trails": 4}, source="c.yaml")
    with pytest.raises(ValueError, match="num_workers is set per trial by workers_per_trial"):
        split_values({"num_workers": 2}, source="c.yaml")


def _trial(trial_id: str, status: str, epochs_done: int = 0, ap: float | None = None) -> SimpleNamespace:
    result = {"epochs_done": epochs_done} if epochs_done else {}
    if ap is not None:
        result["val_AP"] = ap
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=result, config={})


def test_trial_states_and_the_progress_line():
    assert trial_state(False, 3, 3) == COMPLETED
    assert trial_state(False, 1, 3) == STOPPED
    assert trial_state(True, 3, 3) == FAILED
    trials = [_trial("a", "TERMINATED", 3, 0.25), _trial("b", "TERMINATED", 1, 0.05), _trial("c", "ERROR", 1),
              _trial("d", "RUNNING", 2, 0.31), _trial("e", "PENDING"), _trial("f", "PAUSED")]
    assert [current_state(t, 3) for t in trials] == [COMPLETED, STOPPED, FAILED, "running", "pending", "pending"]
    rows = trial_rows(trials, 3)
    assert rows[3] == {"trial_id": "d", "state": "running", "epochs_done": 2, "val_AP": 0.31}
    assert rows[2]["val_AP"] is None
    assert trials_line({"progress": {"trials": rows}}) == (
        "1 running, 1 done, 1 stopped, 1 failed, 2 pending; best val AP 0.3100 (d)")
    assert trials_line({"progress": {"trials": []}}) == "0 running, 0 done"


def _record(trial_id: str, state: str, ap: float | None, epochs: int, wh: float) -> TrialRecord:
    return TrialRecord(trial_id, f"run-{trial_id}", state, epochs, ap, {"hm": 1.0, "wh": wh, "reg": 2.0, "lr": 0.01})


def test_best_trial_is_the_highest_final_val_ap_of_trials_that_did_not_fail():
    records = [_record("a", COMPLETED, 0.20, 3, 0.1), _record("b", STOPPED, 0.30, 1, 0.2),
               _record("c", FAILED, 0.90, 2, 0.3), _record("d", COMPLETED, None, 3, 0.4)]
    assert best_trial(records).trial_id == "b"
    # a tie goes to the trial that trained longer
    assert best_trial([_record("x", STOPPED, 0.3, 1, 0.1), _record("y", COMPLETED, 0.3, 3, 0.1)]).trial_id == "y"
    assert best_trial([_record("c", FAILED, 0.9, 2, 0.3)]) is None


def test_trials_csv_has_one_row_per_trial(tmp_path):
    records = [_record("a", COMPLETED, 0.25, 3, 0.125), _record("c", FAILED, None, 1, 0.5)]
    write_trials_csv(records, tmp_path / "trials.csv")
    with open(tmp_path / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial_id"] for r in rows] == ["a", "c"]
    assert rows[0] == {"trial_id": "a", "state": "completed", "epochs_done": "3", "val_AP": "0.25", "hm": "1",
                       "wh": "0.125", "reg": "2", "lr": "0.01", "run_id": "run-a"}
    assert rows[1]["val_AP"] == "" and rows[1]["state"] == "failed"
