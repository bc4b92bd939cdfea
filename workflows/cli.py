"""The ``centernet`` command line.

Each command lives in its own module under ``workflows/commands/`` and exposes a Typer-annotated
function named ``command``; registering a new one is one line in ``COMMANDS``. Command modules
import only typer at module level and load torch/ray/mlflow inside the function, so ``--help``
stays fast.
"""

from __future__ import annotations

from importlib import import_module

import typer

# command name -> module under workflows.commands
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "precompute": "precompute",
    "train": "train",
    "submit": "submit",
}


def build_app() -> typer.Typer:
    """The Typer application with every registered command."""
    app = typer.Typer(
        name="centernet",
        help="CenterNet object detection: precompute targets, train on Ray, track in MLflow.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    @app.callback()
    def _group() -> None:  # keeps `centernet <command>` a command group even with one command
        pass

    for name, module in COMMANDS.items():
        mod = import_module(f"workflows.commands.{module}")
        app.command(name, help=mod.__doc__, epilog=getattr(mod, "EXAMPLES", None))(mod.command)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()


if __name__ == "__main__":
    main()
