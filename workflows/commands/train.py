"""Train a CenterNet detector with DDP on Ray Train (N workers, any number of nodes), tracked in MLflow.

--data is a shard directory written by `centernet precompute` (a COCO directory with images/ and annotations.json also works, made into samples in process). Without --address a local Ray instance starts; with one, the job runs on that cluster (shards and --storage-path must then be on storage every node sees). Runs go to $MLFLOW_TRACKING_URI, or sqlite:///mlruns.db in the working directory. A worker that dies is replaced and the run goes on from its latest checkpoint; --resume continues a finished or stopped run (e.g. with more --epochs). Precedence: built-in defaults < --config FILE.yaml < command-line flags.
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """Examples:

  # two CPU workers on this machine, validation AP every epoch
  centernet train --data shards/train --val-data shards/val --arch resnet18 --workers 2 --epochs 10

  # a GPU cluster: 8 workers, bf16 autocast, shared storage for checkpoints
  MLFLOW_TRACKING_URI=http://mlflow:5000 centernet train --data /nfs/shards/train \\
      --val-data /nfs/shards/val --arch dla34 --workers 8 --gpu --amp bf16 --batch-size 16 \\
      --address ray://head:10001 --storage-path /nfs/ray_results --name dla34-coco

  # settings from a YAML file (keys as TrainConfig fields), one of them overridden
  centernet train --config train.yaml --epochs 20

  # continue a finished run to 30 epochs (same MLflow run)
  centernet train --resume ray_results/dla34-coco --epochs 30
"""


def _pairs(text: str, what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"{what}: expected name=value pairs like hm=1,wh=0.1,reg=1, got {part!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{what}: {value!r} is not a number") from None
    return out


def command(
    data: str = typer.Option(None, "--data", help="Training shard directory (centernet precompute --out)."),
    val_data: str = typer.Option(None, "--val-data", help="Validation shard directory (precomputed with --no-augment)."),
    arch: str = typer.Option(None, "--arch", help="Architecture: resnet18, resdcn18, dla34, hourglass104, ..."),
    workers: int = typer.Option(None, "--workers", min=1, help="DDP workers (Ray Train actors). (default: 1)"),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Total epochs. (default: 140)"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Batch size per worker. (default: 32)"),
    gpu: bool = typer.Option(None, "--gpu/--cpu", help="One GPU per worker (NCCL) or CPU (gloo). (default: cpu)"),
    amp: str = typer.Option(None, "--amp", help="Mixed precision on GPU: none, bf16 or fp16."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default: 1.25e-4 x global batch / 32)."),
    lr_steps: str = typer.Option(None, "--lr-steps", help="Epochs of x0.1 lr drops, e.g. 90,120."),
    loss_weights: str = typer.Option(None, "--loss-weights", help="e.g. hm=1,wh=0.1,reg=1."),
    address: str = typer.Option(None, "--address", help="Ray cluster (auto, host:6379, ray://host:10001)."),
    config: Path = typer.Option(None, "--config", help="YAML file of TrainConfig fields.", exists=True, dir_okay=False),
    storage_path: str = typer.Option(None, "--storage-path", help="Checkpoints and run state (shared path or URI). (default: ./ray_results)"),
    name: str = typer.Option(None, "--name", help="Run name: <storage-path>/<name>. (default: <arch>-<time>)"),
    resume: str = typer.Option(None, "--resume", help="Run directory to continue (<storage-path>/<name>)."),
    max_failures: int = typer.Option(None, "--max-failures", min=-1, help="Worker-group restarts allowed. (default: 3)"),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=1, help="Epochs between checkpoints."),
    eval_every: int = typer.Option(None, "--eval-every", min=1, help="Epochs between validation AP runs."),
    keep_checkpoints: int = typer.Option(None, "--keep-checkpoints", min=1, help="Checkpoints kept (best by val AP)."),
    seed: int = typer.Option(None, "--seed", help="Seed of initialisation and data order."),
    input_size: int = typer.Option(None, "--input-size", help="Input size for COCO-directory data (shards carry their own)."),
    loader_workers: int = typer.Option(None, "--loader-workers", min=0, help="DataLoader processes per worker."),
    cpus_per_worker: int = typer.Option(None, "--cpus-per-worker", min=1, help="CPUs reserved per worker."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Cap on steps per epoch (smoke runs)."),
    batchnorm: str = typer.Option(None, "--batchnorm", help="batch (per replica), frozen or sync (GPU)."),
    experiment: str = typer.Option(None, "--experiment", help="MLflow experiment. (default: centernet)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No live progress display."),
) -> None:
    from workflows.train import TrainConfig, load_config_file, resume_config, run_training

    flags = {
        "data": data, "val_data": val_data, "arch": arch, "num_workers": workers, "epochs": epochs,
        "batch_size": batch_size, "use_gpu": gpu, "amp": amp, "lr": lr, "address": None,
        "storage_path": storage_path, "name": name, "max_failures": max_failures,
        "checkpoint_every": checkpoint_every, "eval_every": eval_every, "keep_checkpoints": keep_checkpoints,
        "seed": seed, "input_size": input_size, "loader_workers": loader_workers,
        "cpus_per_worker": cpus_per_worker, "max_steps_per_epoch": max_steps, "batchnorm": batchnorm,
        "experiment": experiment,
    }
    flags.pop("address")
    if lr_steps is not None:
        try:
            flags["lr_steps"] = tuple(int(s) for s in lr_steps.split(",") if s.strip())
        except ValueError:
            raise typer.BadParameter(f"--lr-steps: expected comma-separated epochs, got {lr_steps!r}") from None
    if loss_weights is not None:
        flags["loss_weights"] = _pairs(loss_weights, "--loss-weights")
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        if resume:
            cfg = resume_config(resume, **given)
        else:
            values = load_config_file(config) if config else {}
            values.update(given)
            if not values.get("data"):
                raise typer.BadParameter("--data is required (or data: in --config, or --resume RUN_DIR)")
            cfg = TrainConfig.from_dict(values)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None

    outcome = run_training(cfg, address=address, show_progress=not no_progress)
    m = outcome.metrics
    typer.echo(f"\nrun:        {outcome.run_dir}")
    typer.echo(f"mlflow run: {outcome.mlflow_run_id} ({outcome.tracking_uri})")
    typer.echo(f"checkpoint: {outcome.checkpoint_path}")
    summary = "  ".join(f"{k} {m[k]:.4f}" for k in ("train/total", "val/AP", "val/AP50", "images_per_second")
                        if isinstance(m.get(k), (int, float)))
    typer.echo(f"epoch {int(m.get('epoch', -1)) + 1}/{cfg.epochs}: {summary}")
