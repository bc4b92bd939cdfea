"""Search the loss weights (and the learning rate) with Ray Tune: every trial is a Ray Train run of `centernet train` with that trial's settings, compared by validation AP.

By default the search space is the three loss weights: hm fixed at 1, wh log-uniform in [0.01, 1], reg log-uniform in [0.1, 10]; --space FILE.yaml changes any entry (a number, {uniform: [lo, hi]}, {loguniform: [lo, hi]} or {choice: [...]}; keys hm, wh, reg, lr). Trials are chosen by Optuna's TPE (--search random: random sampling) and stopped early by ASHA when their val AP falls behind (--scheduler fifo: every trial runs to the end). Every `centernet train` option applies to each trial (--workers is --workers-per-trial here); --val-data is required. MLflow gets one run per search (tag centernet.kind=tune) with a nested run per trial, which is a training run like any other (its checkpoint, metrics, tags); at the end the search's run gets the best trial, trials.csv and two plots. The search's state is kept in <storage-path>/<name>: running the same --name again, or --resume <storage-path>/<name>, continues it (ended trials are not rerun). Without --address a local Ray instance starts on 127.0.0.1; paths are relative to where you type the command. Every option is also a key of --config FILE.yaml; precedence: defaults < --config < flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from centernet.config_fields import path_fields
from workflows.cli_options import address_option, cli_parameters, given_values, option, with_signature
from workflows.console import VERBOSE_HELP, mlflow_ui_command
from workflows.train_config import TrainConfig
from workflows.tune_config import TRAIN_FIELDS_SET_BY_TUNE, TuneConfig

EXAMPLES = """Examples:

  # 8 trials of 10 epochs, 2 at a time, Optuna + ASHA, on this machine
  centernet tune --data shards/train --val-data shards/val --arch resnet18 --epochs 10 --trials 8 \\
      --max-concurrent 2 --name wh-reg

  # also search the learning rate, and register the best model as "shapes"
  printf 'lr: {loguniform: [1e-4, 1e-2]}\\n' > space.yaml
  centernet tune --data shards/train --val-data shards/val --space space.yaml --trials 16 --register shapes

  # random search, every trial to the end
  centernet tune --data shards/train --val-data shards/val --search random --scheduler fifo --trials 6

  # continue an interrupted search (or run the same --name again)
  centernet tune --resume ray_results/wh-reg

  # a GPU cluster: 2 workers per trial, shared storage, a tracking server
  MLFLOW_TRACKING_URI=http://mlflow:5000 centernet tune --data /nfs/shards/train --val-data /nfs/shards/val \\
      --gpu --workers-per-trial 2 --trials 32 --address ray://head:10001 --storage-path /nfs/ray_results
"""


def _run(*, config: Path | None = None, resume: str | None = None, address: str | None = None,
         no_progress: bool = False, verbose: bool = False, **fields: Any) -> None:
    from workflows.errors import UserError
    from workflows.train_config import load_config_file
    from workflows.tune import run_tune, stored_configs
    from workflows.tune_config import split_values
    from workflows.user_paths import on_cluster, resolve_user_path, resolve_user_paths

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # as `centernet register`
    cluster = on_cluster(address)
    paths = path_fields(TrainConfig) + path_fields(TuneConfig)
    given_train = resolve_user_paths({k: v for k, v in given_values(TrainConfig, fields).items()
                                      if k not in TRAIN_FIELDS_SET_BY_TUNE}, paths, on_cluster=cluster)
    given_tune = resolve_user_paths(given_values(TuneConfig, fields), paths, on_cluster=cluster)
    try:
        if resume:
            directory = resolve_user_path(resume, option="--resume", on_cluster=cluster).rstrip("/")
            stored_train, stored_tune = stored_configs(directory)
            storage, _, name = directory.rpartition("/")
            train_values = {**stored_train.to_dict(), "storage_path": storage or ".", **given_train}
            tune_values = {**stored_tune.to_dict(), "name": name, **given_tune}
        else:
            values = load_config_file(resolve_user_path(str(config), option="--config")) if config else {}
            train_values, tune_values = split_values(resolve_user_paths(values, paths, on_cluster=cluster),
                                                     source=str(config) if config else "options")
            train_values.update(given_train)
            tune_values.update(given_tune)
            if not train_values.get("data"):
                raise UserError("--data is required (or data: in --config, or --resume SEARCH_DIR)")
        train = TrainConfig.from_dict(train_values, source="training config")
        tune = TuneConfig.from_dict(tune_values, source="search config")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    outcome = run_tune(train, tune, address=address, show_progress=not no_progress, verbose=verbose)
    report(outcome)


def report(outcome: Any) -> None:
    """The closing lines of a search: its trials, the best one, the registration, where to look."""
    from workflows.tune_callback import settings_text
    from workflows.tune_trial import COMPLETED, FAILED, STOPPED

    counts = {s: sum(r.state == s for r in outcome.trials) for s in (COMPLETED, STOPPED, FAILED)}
    typer.echo(f"trials:     {len(outcome.trials)} ({counts[COMPLETED]} done, {counts[STOPPED]} stopped early, "
               f"{counts[FAILED]} failed)")
    best = outcome.best
    typer.echo(f"best:       trial {best.trial_id}: val AP {best.val_ap:.4f} after {best.epochs_done} epoch(s) "
               f"({settings_text(best.settings)}); run {best.run_id}")
    reg = outcome.registration
    if reg is not None:
        typer.echo(f"registered: {reg.model_uri}; @champion {'moved' if reg.champion else 'stays'}: {reg.reason}")
    typer.echo(f"mlflow:     search run {outcome.parent_run_id}; browse with: "
               f"{mlflow_ui_command(outcome.tracking_uri)}")


command = with_signature(_run, [
    *cli_parameters(TrainConfig, skip=TRAIN_FIELDS_SET_BY_TUNE),
    *cli_parameters(TuneConfig),
    option("config", Path | None, None, "--config", dir_okay=False,
           help="YAML file of options (keys as the options, with underscores; training and search keys alike)."),
    option("resume", str | None, None, "--resume",
           help="Search directory to continue (<storage-path>/<name>), with its stored settings."),
    address_option(),
    option("no_progress", bool, False, "--no-progress", help="No live progress display."),
    option("verbose", bool, False, "--verbose", "-v", help=VERBOSE_HELP),
])
