"""Submit a job to a Ray cluster through the Ray Jobs API, and manage submitted jobs.

Everything after `--` is the command line of the job: `centernet train` options (the default), or a command name first (`-- tune ...`, `-- run CONFIG.yaml`, `-- precompute ...`). The project directory is uploaded as the job's working directory (without .git, virtual environments, data and stores). MLFLOW_TRACKING_URI (default: the sqlite:///mlruns.db of this working directory, which only a cluster sharing this filesystem can reach; use a tracking server for remote clusters), the S3 settings and the git commit travel in the runtime environment. Paths in the job's arguments are read on the cluster: they must be absolute paths on storage every node sees, or s3:// URIs; a training job needs --storage-path (or --resume) so that its checkpoints outlive the Ray session. The job runs with this Python when the cluster is on this machine, else with the cluster's `python` (--python overrides). Prints the job id; --follow streams the logs until the job ends and exits non-zero unless it SUCCEEDED.
"""

from __future__ import annotations

from pathlib import Path

import typer

from workflows.console import VERBOSE_HELP

EXAMPLES = """Examples:

  # a head on this machine (see the README's "A Ray cluster on this machine"), then:
  centernet submit --address http://127.0.0.1:8265 --follow -- \\
      --data $PWD/shards/train --val-data $PWD/shards/val --storage-path $PWD/ray_results --epochs 10

  # a remote cluster: shared storage, a tracking server
  MLFLOW_TRACKING_URI=http://mlflow:5000 centernet submit --address http://head:8265 --follow -- \\
      --data s3://bucket/shards/train --val-data s3://bucket/shards/val --arch dla34 --workers 8 --gpu \\
      --storage-path s3://bucket/ray_results --name dla34-coco

  # a Tune search or a whole pipeline as the job
  centernet submit --address http://head:8265 -- tune --data /nfs/shards/train --val-data /nfs/shards/val --trials 16
  centernet submit --address http://head:8265 -- run /nfs/configs/coco_resdcn18.yaml

  # state of a job, its logs, or stop it
  centernet submit --address http://head:8265 --status raysubmit_XYZ
  centernet submit --address http://head:8265 --logs raysubmit_XYZ
  centernet submit --address http://head:8265 --stop raysubmit_XYZ
"""


def command(
    job_args: list[str] = typer.Argument(None, help="The job's command line (after --): train options, or a command and its options."),
    address: str = typer.Option(None, "--address",
                                help="Ray dashboard address [default: $RAY_ADDRESS if http, else http://127.0.0.1:8265]"),
    follow: bool = typer.Option(False, "--follow", help="Stream the job's logs until it ends."),
    status: str = typer.Option(None, "--status", metavar="JOB", help="Print a job's status and exit."),
    stop: str = typer.Option(None, "--stop", metavar="JOB", help="Stop a job and exit."),
    logs: str = typer.Option(None, "--logs", metavar="JOB", help="Print a job's logs so far and exit."),
    working_dir: Path = typer.Option(None, "--working-dir", help="Directory uploaded as the job's working dir [default: this project]"),
    job_id: str = typer.Option(None, "--job-id", help="Submission id to use (must be unique on the cluster)."),
    entrypoint_cpus: float = typer.Option(0.0, "--entrypoint-cpus", min=0.0, help="CPUs reserved for the job's driver."),
    python: str = typer.Option(None, "--python", help="Interpreter of the job on the cluster [default: this one for a cluster on this machine, else python]"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    from workflows.errors import UserError
    from workflows.submit import manage_job, submit_job

    chosen = [x for x in (status, stop, logs) if x]
    if chosen:
        if len(chosen) > 1 or job_args:
            raise UserError("give one of --status, --stop, --logs (and no job arguments)")
        typer.echo(manage_job(address, status=status, stop=stop, logs=logs))
        return
    if not job_args:
        raise UserError("nothing to submit: give the job's arguments after --, e.g. centernet submit -- "
                        "--data /nfs/shards/train --storage-path /nfs/ray_results")
    submitted = submit_job(address, list(job_args), working_dir=working_dir, job_id=job_id,
                           entrypoint_cpus=entrypoint_cpus, python=python, follow=follow,
                           write=lambda s: typer.echo(s, err=True))
    typer.echo(submitted.job_id)
    if follow and submitted.final_status != "SUCCEEDED":
        raise typer.Exit(1)
