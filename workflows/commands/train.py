"""Train a CenterNet detector with DDP on Ray Train (N workers, any number of nodes), tracked in MLflow.

--data is a shard directory written by `centernet precompute` (a COCO directory with images/ and annotations.json also works, made into samples in process). Paths are relative to where you type the command; s3:// URIs work too. Without --address a local Ray instance starts on 127.0.0.1; with one, the job runs on that cluster (shards and --storage-path must then be on storage every node sees). Runs go to $MLFLOW_TRACKING_URI, or sqlite:///mlruns.db in the working directory. A worker that dies is replaced and the run goes on from its latest checkpoint; --resume continues a finished or stopped run (e.g. with more --epochs). Every option is also a key of --config FILE.yaml (the option name with underscores: batch_size, val_data, ...); precedence: defaults < --config < flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from centernet.config_fields import path_fields
from workflows.cli_options import address_option, cli_parameters, given_values, option, with_signature
from workflows.console import VERBOSE_HELP, mlflow_ui_command
from workflows.train_config import TrainConfig

EXAMPLES = """Examples:

  # two CPU workers on this machine, validation AP every epoch
  centernet train --data shards/train --val-data shards/val --arch resnet18 --workers 2 --epochs 10

  # from random initialisation (no download); the learning rate and warmup default accordingly
  centernet train --data shards/train --val-data shards/val --pretrained none --epochs 36

  # a GPU cluster: 8 workers, bf16 autocast, shared storage for checkpoints
  MLFLOW_TRACKING_URI=http://mlflow:5000 centernet train --data /nfs/shards/train \\
      --val-data /nfs/shards/val --arch dla34 --workers 8 --gpu --amp bf16 --batch-size 16 \\
      --address ray://head:10001 --storage-path /nfs/ray_results --name dla34-coco

  # settings from a YAML file (keys as the options, underscores), one of them overridden
  centernet train --config train.yaml --epochs 20

  # continue a finished run to 30 epochs (same MLflow run)
  centernet train --resume ray_results/dla34-coco --epochs 30
"""


def _run(*, config: Path | None = None, resume: str | None = None, address: str | None = None,
         no_progress: bool = False, verbose: bool = False, **fields: Any) -> None:
    from workflows.errors import UserError
    from workflows.train import resume_config, run_training
    from workflows.train_config import load_config_file
    from workflows.user_paths import on_cluster, resolve_user_path, resolve_user_paths

    cluster = on_cluster(address)
    given = resolve_user_paths(given_values(TrainConfig, fields), path_fields(TrainConfig), on_cluster=cluster)
    try:
        if resume:
            cfg = resume_config(resolve_user_path(resume, option="--resume", on_cluster=cluster), **given)
        else:
            values = load_config_file(resolve_user_path(str(config), option="--config")) if config else {}
            values = resolve_user_paths(values, path_fields(TrainConfig), on_cluster=cluster)
            values.update(given)
            if not values.get("data"):
                raise UserError("--data is required (or data: in --config, or --resume RUN_DIR)")
            cfg = TrainConfig.from_dict(values, source=str(config) if config and not given else "training config")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    outcome = run_training(cfg, address=address, show_progress=not no_progress, verbose=verbose)
    report(cfg, outcome)


def report(cfg: TrainConfig, outcome: Any) -> None:
    """The closing lines of a training run: where things are and the final metrics."""

    m = outcome.metrics
    summary = "  ".join(f"{k} {m[k]:.4f}" for k in ("train/total", "val/AP", "val/AP50", "images_per_second")
                        if isinstance(m.get(k), (int, float)))
    typer.echo(f"epoch {int(m.get('epoch', -1)) + 1}/{cfg.epochs}: {summary}")
    typer.echo(f"checkpoint: {outcome.checkpoint_path}")
    typer.echo(f"mlflow:     run {outcome.mlflow_run_id}; browse with: "
               f"{mlflow_ui_command(outcome.tracking_uri)}")


command = with_signature(_run, [
    *cli_parameters(TrainConfig),
    option("config", Path | None, None, "--config", dir_okay=False,
           help="YAML file of training options (keys as the options, with underscores)."),
    option("resume", str | None, None, "--resume", help="Run directory to continue (<storage-path>/<name>)."),
    address_option(),
    option("no_progress", bool, False, "--no-progress", help="No live progress display."),
    option("verbose", bool, False, "--verbose", "-v", help=VERBOSE_HELP),
])
