"""The ``centernet`` command line.

Each command lives in its own module under ``workflows/commands/`` and exposes a Typer-annotated
function named ``command``; registering a new one is one line in ``COMMANDS``. Command modules
import only light modules at module level and load torch/ray/mlflow inside the function, so
``--help`` stays fast.

Errors: a :class:`workflows.errors.UserError` (bad input, missing file, unreachable service) or a
usage error prints one line, ``error: …``, and exits non-zero; ``--verbose`` (every command has it)
shows library logs, Ray worker output and tracebacks.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

import typer

from workflows.console import VERBOSE_FLAGS, VERBOSE_HELP, configure_output
from workflows.errors import UserError

# command name -> module under workflows.commands
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "precompute": "precompute",
    "train": "train",
    "submit": "submit",
    "tune": "tune",
    "register": "register",
    "predict": "predict",
    "evaluate": "evaluate",
    "export": "export",
    "run": "run",
}

def with_verbose_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a ``--verbose/-v`` flag added unless it declares ``verbose`` itself (the CLI
    reads the flag before dispatching, see :func:`main`)."""
    sig = inspect.signature(fn, eval_str=True)
    if "verbose" in sig.parameters:
        return fn

    def command(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    option = typer.Option(False, *VERBOSE_FLAGS, help=VERBOSE_HELP)
    extra = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=option, annotation=bool)
    command.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra])  # type: ignore[attr-defined]
    command.__doc__ = fn.__doc__
    return command


def verbatim(text: str | None) -> str | None:
    """``text`` with every paragraph marked so that click prints it as written (no rewrapping)."""
    if not text:
        return text
    return "\n\n".join("\b\n" + para for para in text.strip("\n").split("\n\n"))


def build_app() -> typer.Typer:
    """The Typer application with every registered command."""
    app = typer.Typer(
        name="centernet",
        help="CenterNet object detection: precompute targets, train on Ray, track in MLflow.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _group() -> None:  # keeps `centernet <command>` a command group even with one command
        pass

    for name, module in COMMANDS.items():
        mod = import_module(f"workflows.commands.{module}")
        app.command(name, help=mod.__doc__, epilog=verbatim(getattr(mod, "EXAMPLES", None)))(
            with_verbose_option(mod.command))
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the command, report errors as one line."""
    from typer.exceptions import TyperException

    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    verbose = any(a in VERBOSE_FLAGS for a in args)
    configure_output(verbose)
    try:
        code = build_app()(args=args, prog_name="centernet", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        _fail("aborted", 130)
    except TyperException as exc:  # usage errors: unknown option, bad value, missing argument
        _fail(exc.format_message(), getattr(exc, "exit_code", 2))
    except UserError as exc:
        if verbose:
            raise
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # a bug: one line, the traceback with --verbose
        if verbose:
            raise
        _fail(f"{type(exc).__name__}: {' '.join(str(exc).split())} (run again with --verbose for the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
