"""Submit a training job to a Ray cluster through the Ray Jobs API, and manage submitted jobs.

Everything after `--` is passed to `centernet train` on the cluster. The project directory is uploaded as the job's working directory (without .git, virtual environments, data and stores); MLFLOW_TRACKING_URI (default: the sqlite:///mlruns.db of this working directory, which only a cluster sharing this filesystem can reach — use a tracking server for remote clusters) and the git commit travel in the runtime environment. Paths given to train (--data, --storage-path) are read on the cluster: use shared storage. Prints the job id; --follow streams the logs until the job ends and exits non-zero unless it SUCCEEDED.
"""

from __future__ import annotations

from pathlib import Path

import typer

EXAMPLES = """Examples:

  # submit to the cluster whose dashboard is at head:8265 and follow the logs
  centernet submit --address http://head:8265 --follow -- \\
      --data /nfs/shards/train --val-data /nfs/shards/val --arch dla34 --workers 8 --gpu \\
      --storage-path /nfs/ray_results --name dla34-coco

  # state of a job, its logs, or stop it
  centernet submit --address http://head:8265 --status raysubmit_XYZ
  centernet submit --address http://head:8265 --logs raysubmit_XYZ
  centernet submit --address http://head:8265 --stop raysubmit_XYZ
"""


def command(
    train_args: list[str] = typer.Argument(None, help="Arguments of `centernet train` (after --)."),
    address: str = typer.Option(None, "--address",
                                help="Ray dashboard address (default: $RAY_ADDRESS if http, else http://127.0.0.1:8265)."),
    follow: bool = typer.Option(False, "--follow", help="Stream the job's logs until it ends."),
    status: str = typer.Option(None, "--status", metavar="JOB", help="Print a job's status and exit."),
    stop: str = typer.Option(None, "--stop", metavar="JOB", help="Stop a job and exit."),
    logs: str = typer.Option(None, "--logs", metavar="JOB", help="Print a job's logs so far and exit."),
    working_dir: Path = typer.Option(None, "--working-dir", help="Directory uploaded as the job's working dir (default: this project)."),
    job_id: str = typer.Option(None, "--job-id", help="Submission id to use (must be unique on the cluster)."),
    entrypoint_cpus: float = typer.Option(0.0, "--entrypoint-cpus", min=0.0, help="CPUs reserved for the job's driver."),
) -> None:
    import shlex

    from workflows.ray_runtime import follow_job_logs, job_runtime_env, jobs_client, wait_for_job, worker_env_vars
    from workflows.tracking import GIT_COMMIT_ENV, git_commit, resolve_tracking_uri

    client = jobs_client(address)
    if status or stop or logs:
        if sum(bool(x) for x in (status, stop, logs)) > 1 or train_args:
            raise typer.BadParameter("give one of --status, --stop, --logs (and no training arguments)")
        if status:
            info = client.get_job_info(status)
            typer.echo(f"{status}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
        elif stop:
            stopped = client.stop_job(stop)
            typer.echo(f"{stop}: {'stop requested' if stopped else 'not running'}")
        else:
            typer.echo(client.get_job_logs(logs))
        return
    if not train_args:
        raise typer.BadParameter("nothing to submit: give the training arguments after --, e.g. "
                                 "centernet submit -- --data /nfs/shards/train --arch resnet18")
    root = working_dir or Path(__file__).resolve().parents[2]
    tracking_uri = resolve_tracking_uri()
    extra = {GIT_COMMIT_ENV: git_commit(root) or "unknown"}
    env = job_runtime_env(root, worker_env_vars(tracking_uri, extra))
    entrypoint = shlex.join(["python", "-m", "workflows.cli", "train", *train_args])
    submitted = client.submit_job(entrypoint=entrypoint, runtime_env=env, submission_id=job_id,
                                  entrypoint_num_cpus=entrypoint_cpus,
                                  metadata={"centernet": "train"})
    typer.echo(submitted)
    typer.echo(f"tracking:   {tracking_uri}", err=True)
    typer.echo(f"status:     centernet submit --address {client.get_address()} --status {submitted}", err=True)
    if follow:
        follow_job_logs(client, submitted, write=lambda s: typer.echo(s, err=True))
        final = wait_for_job(client, submitted, timeout_s=60)
        typer.echo(f"{submitted}: {final}", err=True)
        if final != "SUCCEEDED":
            raise typer.Exit(1)
