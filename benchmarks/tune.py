"""Ray Tune over the loss weights: what ASHA saves against FIFO, and what a trial costs to start.

The same 8 trials (random search, one seed: identical weights in both runs) of 4 epochs on the same
tiny shards (the Tune tests' own: 48 images of 64 x 64, 12 steps of batch 4 per epoch), 2 at a
time, one worker each, once with ASHA (grace 1, reduction 2) and once with FIFO. Reported:

- trial-epochs run (epochs Tune received) and optimisation steps run (what the workers did, from
  MLflow: a stopped trial runs on until Tune's stop reaches it), ASHA's share saved of each;
- the best val AP of each search, and its wall time;
- the fixed cost of a trial — from its trainable starting (it opens its MLflow run) to its first
  optimisation step (Ray Train start-up: Train controller, worker group, process group, data,
  model) — against the time of one epoch (steps, evaluation, checkpoint, report: the time between
  consecutive epoch reports, epochs 2+).

Run: python benchmarks/tune.py [--trials 8] [--epochs 4] [--max-concurrent 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_search(scheduler: str, shards: tuple[Path, Path], root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tune_data import TRIAL_OPTIONS

    from workflows.tracking import client
    from workflows.train_config import TrainConfig
    from workflows.tune import run_tune
    from workflows.tune_config import TuneConfig

    uri = f"sqlite:///{root / scheduler / 'mlruns.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    train = TrainConfig(data=str(shards[0]), val_data=str(shards[1]), epochs=args.epochs,
                        storage_path=str(root / scheduler), **TRIAL_OPTIONS)
    tune = TuneConfig(name=scheduler, trials=args.trials, max_concurrent=args.max_concurrent, search="random",
                      search_seed=0, scheduler=scheduler, grace_period=1, reduction_factor=2)
    start = time.perf_counter()
    outcome = run_tune(train, tune, show_progress=False)
    wall = time.perf_counter() - start
    c = client(uri)
    steps = {r.trial_id: c.get_metric_history(r.run_id, "loss/total") for r in outcome.trials}
    return {"outcome": outcome, "wall": wall, "uri": uri, "epochs": sum(r.epochs_done for r in outcome.trials),
            "steps": sum(len(h) for h in steps.values()),
            "first_step": {t: min(m.timestamp for m in h) / 1000 for t, h in steps.items() if h}}


def trial_timings(search: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(start-up of each trial: its trainable starting — the moment it opens its MLflow run — to its
    first optimisation step; durations of epochs 2+: between consecutive epoch reports), from MLflow."""
    from workflows.tracking import client

    c = client(search["uri"])
    startups, epochs = [], []
    for record in search["outcome"].trials:
        first = search["first_step"].get(record.trial_id)
        if first is None:
            continue
        startups.append(first - c.get_run(record.run_id).info.start_time / 1000)
        reports = sorted(m.timestamp / 1000 for m in c.get_metric_history(record.run_id, "train/total"))
        epochs += [b - a for a, b in zip(reports, reports[1:])]
    return startups, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-concurrent", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))  # the tests' shards
    from tune_data import make_shards

    from workflows.console import configure_output

    configure_output(verbose=False)
    with tempfile.TemporaryDirectory(prefix="centernet-bench-tune-") as tmp:
        root = Path(tmp)
        shards = make_shards(root / "data")
        results = {}
        for name in ("asha", "fifo"):
            results[name] = r = run_search(name, shards, root, args)
            print(f"{name}: {r['epochs']} trial-epochs, {r['steps']} steps, best val AP "
                  f"{r['outcome'].best.val_ap:.4f}, {r['wall']:.0f} s", flush=True)  # a partial result survives
        startups, epochs = trial_timings(results["asha"])
        more_startups, more_epochs = trial_timings(results["fifo"])
    asha, fifo = results["asha"], results["fifo"]
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.max_concurrent} at a time, 1 worker each (CPU)")
    print(f"{'':8}{'trial-epochs':>14}{'steps':>8}{'best val AP':>13}{'wall s':>9}")
    for name, r in (("ASHA", asha), ("FIFO", fifo)):
        print(f"{name:8}{r['epochs']:>14}{r['steps']:>8}{r['outcome'].best.val_ap:>13.4f}{r['wall']:>9.0f}")
    print(f"ASHA saves {1 - asha['epochs'] / fifo['epochs']:.0%} of the trial-epochs, "
          f"{1 - asha['steps'] / fifo['steps']:.0%} of the steps run, {1 - asha['wall'] / fifo['wall']:.0%} of the "
          f"wall time; best val AP {asha['outcome'].best.val_ap:.4f} vs {fifo['outcome'].best.val_ap:.4f}")
    startups += more_startups
    epochs += more_epochs
    start, epoch = statistics.median(startups), statistics.median(epochs)
    print(f"trial start-up (trainable start -> first step), median of {len(startups)}: {start:.1f} s "
          f"(min {min(startups):.1f}, max {max(startups):.1f}); one epoch ({len(epochs)} measured): {epoch:.1f} s; "
          f"start-up = {start / epoch:.1f} epochs")


if __name__ == "__main__":
    main()
