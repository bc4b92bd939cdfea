"""A real search: 4 trials (Optuna TPE), 2 at a time, ASHA (grace 1, reduction 2, 3 epochs) on tiny
precomputed shards, each trial a Ray Train run on the embedded Ray (dashboard on), tracked in a real
MLflow store: one parent run, one nested training run per trial, trials stopped by ASHA recorded as
stopped, each trial's weighted losses its weights times its losses, and the parent's report."""

from __future__ import annotations

import csv
import math

import pytest

from centernet.checkpoint import load_checkpoint_file
from tune_data import STEPS_PER_EPOCH, TRIAL_OPTIONS, make_shards
from workflows.tracking import client, find_runs, start_run
from workflows.train_config import TrainConfig
from workflows.train_worker import CHECKPOINT_FILE
from workflows.tune import run_tune
from workflows.tune_config import TuneConfig
from workflows.tune_trial import COMPLETED, STOPPED

pytestmark = pytest.mark.timeout(600)
EPOCHS = 3


def trial_train_config(train_dir, val_dir, storage) -> TrainConfig:
    return TrainConfig(data=str(train_dir), val_data=str(val_dir), epochs=EPOCHS, storage_path=str(storage),
                       **TRIAL_OPTIONS)


@pytest.fixture(scope="module")
def tracking(sqlite_tracking):
    return sqlite_tracking


@pytest.fixture(scope="module")
def search(tmp_path_factory, tracking):
    train_dir, val_dir = make_shards(tmp_path_factory.mktemp("data"))
    train = trial_train_config(train_dir, val_dir, tmp_path_factory.mktemp("results"))
    tune = TuneConfig(name="asha", trials=4, max_concurrent=2, grace_period=1, reduction_factor=2, search="optuna",
                      scheduler="asha", search_seed=0, register="shapes")
    outer = start_run(tracking, experiment=train.experiment, run_name="pipeline", params={},
                      tags={"centernet.kind": "pipeline"})  # a caller's run to nest the search under
    return run_tune(train, tune, show_progress=False, parent_run_id=outer)


def test_one_parent_run_and_a_nested_training_run_per_trial(search, tracking):
    runs = find_runs(tracking)
    parents = [r for r in runs if r.data.tags.get("centernet.kind") == "tune"]
    assert len(parents) == 1 and parents[0].info.run_id == search.parent_run_id
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    p = parent.data.params
    assert (p["searcher"], p["scheduler"], p["trials"], p["max_concurrent"]) == ("optuna", "asha", "4", "2")
    assert (p["grace_period"], p["reduction_factor"], p["max_epochs"]) == ("1", "2", str(EPOCHS))
    assert (p["space.hm"], p["space.wh"], p["space.reg"]) == ("1", "loguniform(0.01, 1)", "loguniform(0.1, 10)")
    assert p["data_hash"] == parent.data.tags["data_hash"] and p["val_data_hash"]
    outer = [r for r in runs if r.data.tags.get("centernet.kind") == "pipeline"]
    assert len(outer) == 1 and parent.data.tags["mlflow.parentRunId"] == outer[0].info.run_id

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 6  # the caller's run, the search's, one per trial
    weights = set()
    for run in children:
        tags, params = run.data.tags, run.data.params
        # what `centernet register` reads from a training run
        assert tags["centernet.kind"] == "train" and tags["centernet.tune_parent"] == parent.info.run_id
        assert tags["arch"] == "resnet18" and tags["data_hash"] == p["data_hash"]
        assert tags["val_data_hash"] == p["val_data_hash"]
        assert run.info.status == "FINISHED" and "val/AP" in run.data.metrics
        assert params["trial_id"] == tags["centernet.trial_id"]
        hm, wh, reg = (float(params[f"loss_weights.{k}"]) for k in ("hm", "wh", "reg"))
        assert hm == 1.0 and 0.01 <= wh <= 1 and 0.1 <= reg <= 10
        weights.add((wh, reg))
    assert len(weights) == 4  # every trial its own weights


def test_asha_stops_trials_and_they_are_recorded_as_stopped(search, tracking, tmp_path):
    c = client(tracking)
    states = {}
    for record in search.trials:
        run = c.get_run(record.run_id)
        state, done = run.data.tags["centernet.trial_state"], int(run.data.tags["centernet.epochs_done"])
        states[record.trial_id] = state
        assert state in (COMPLETED, STOPPED), state  # stopped, not failed
        assert (done == EPOCHS) == (state == COMPLETED) and 1 <= done <= EPOCHS
        # one evaluation per epoch it ran, and the checkpoint it left is its last epoch's
        assert len(c.get_metric_history(record.run_id, "val/AP")) == done
        assert len(c.get_metric_history(record.run_id, "train/total")) == done
        path = c.download_artifacts(record.run_id, f"checkpoint/{CHECKPOINT_FILE}", str(tmp_path))
        assert load_checkpoint_file(path)["epoch"] == done - 1
    assert STOPPED in states.values(), states
    assert COMPLETED in states.values(), states


def test_weighted_losses_are_the_trial_weights_times_its_losses(search, tracking):
    c = client(tracking)
    for record in search.trials:
        params = c.get_run(record.run_id).data.params
        for k in ("hm", "wh", "reg"):
            weight = float(params[f"loss_weights.{k}"])
            raw = {m.step: m.value for m in c.get_metric_history(record.run_id, f"loss/{k}")}
            weighted = {m.step: m.value for m in c.get_metric_history(record.run_id, f"loss_weighted/{k}")}
            # a stopped trial may have run on into the next epoch before the stop reached it
            assert len(raw) >= STEPS_PER_EPOCH * record.epochs_done and raw.keys() == weighted.keys()
            for step, value in raw.items():
                assert math.isclose(weighted[step], weight * value, rel_tol=1e-9, abs_tol=1e-12), (k, step)


def test_the_parent_gets_the_best_trial_a_csv_and_two_plots(search, tracking, tmp_path):
    c = client(tracking)
    finals = {r.trial_id: c.get_run(r.run_id).data.metrics["val/AP"] for r in search.trials}
    best_id = max(finals, key=finals.get)
    assert search.best.trial_id == best_id
    parent = c.get_run(search.parent_run_id)
    best_run = c.get_run(search.best.run_id)
    assert parent.data.params["best.trial_id"] == best_id and parent.data.params["best.run_id"] == best_run.info.run_id
    for k in ("hm", "wh", "reg"):
        assert float(parent.data.params[f"best.{k}"]) == float(best_run.data.params[f"loss_weights.{k}"])
    assert parent.data.metrics["best_val_AP"] == pytest.approx(finals[best_id])
    counts = {s: sum(r.state == s for r in search.trials) for s in (COMPLETED, STOPPED)}
    assert parent.data.metrics["trials_completed"] == counts[COMPLETED]
    assert parent.data.metrics["trials_stopped_early"] == counts[STOPPED]
    assert {a.path for a in c.list_artifacts(search.parent_run_id, "tune")} == {
        "tune/trials.csv", "tune/val_ap_vs_settings.png", "tune/learning_curves.png"}
    with open(c.download_artifacts(search.parent_run_id, "tune/trials.csv", str(tmp_path))) as f:
        rows = {row["trial_id"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(finals)
    for record in search.trials:
        row = rows[record.trial_id]
        assert row["state"] == record.state and int(row["epochs_done"]) == record.epochs_done
        assert float(row["val_AP"]) == pytest.approx(finals[record.trial_id], rel=1e-5)
        assert row["run_id"] == record.run_id


def test_the_best_trial_is_registered_as_champion(search, tracking):
    c = client(tracking)
    reg = search.registration
    assert reg is not None and reg.run_id == search.best.run_id == search.best_run_id
    versions = c.search_model_versions("name = 'shapes'")
    assert [str(v.version) for v in versions] == [reg.version] and versions[0].run_id == search.best.run_id
    assert str(c.get_model_version_by_alias("shapes", "champion").version) == reg.version
    tags = versions[0].tags
    assert tags["tune_parent"] == search.parent_run_id and tags["arch"] == "resnet18"
    assert float(tags["val_AP"]) == pytest.approx(search.best.val_ap)
    weights = search.best_params["loss_weights"]
    params = c.get_run(search.best.run_id).data.params
    assert weights == {k: float(params[f"loss_weights.{k}"]) for k in ("hm", "wh", "reg")}
