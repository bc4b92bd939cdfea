"""Live progress of Ray jobs: workers write to a small named actor, the driver draws a bar.

:class:`ProgressBoard` is a 0-CPU actor owned by the driver; training workers (rank 0) ``update`` it
after each step and ``register`` at start-up; :class:`ProgressDisplay` polls it from a thread and
shows a tqdm bar on a terminal, or a line every ``line_every`` seconds when the output is a file.
Ray Tune reuses both with one board per search.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any


class ProgressBoard:
    """State shared by workers and the driver (one per job, named)."""

    def __init__(self) -> None:
        self.progress: dict[str, Any] = {}
        self.workers: dict[int, dict[str, Any]] = {}
        self.attempts = 0

    def update(self, state: dict[str, Any]) -> None:
        self.progress.update(state)

    def register(self, rank: int, info: dict[str, Any]) -> None:
        if rank == 0:
            self.attempts += 1
        self.workers[rank] = info

    def get(self) -> dict[str, Any]:
        return {"progress": dict(self.progress), "workers": dict(self.workers), "attempts": self.attempts}


def progress_actor_name(run: str) -> str:
    """The name of the progress actor of run ``run`` (tests and tools can look it up)."""
    return f"centernet-progress-{run}"


def progress_board(name: str) -> Any:
    """Create (or get) the named progress actor of a job (0 CPUs, owned by the driver)."""
    import ray

    return ray.remote(num_cpus=0)(ProgressBoard).options(name=name, get_if_exists=True).remote()


def find_board(name: str | None) -> Any | None:
    """The named progress actor from inside a worker, or ``None`` when there is none."""
    if not name:
        return None
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


def epoch_line(state: dict[str, Any]) -> str:
    """One line of a training job's progress, e.g. ``epoch 3/10 step 12 loss 1.2345 85.1 img/s``."""
    p = state["progress"]
    text = (f"epoch {int(p.get('epoch', 0)) + 1}/{p.get('epochs', '?')} step {p.get('step', 0)} "
            f"loss {p.get('loss', float('nan')):.4f} {p.get('images_per_second', 0):.1f} img/s")
    if state.get("attempts", 1) > 1:
        text += f" (attempt {state['attempts']})"
    return text


class ProgressDisplay:
    """Poll a board from a daemon thread and draw ``describe(state)``; use as a context manager.

    ``position(state)`` gives the bar's position out of ``total``.
    """

    def __init__(self, board: Any, *, total: int, unit: str, describe: Callable[[dict[str, Any]], str],
                 position: Callable[[dict[str, Any]], int], enabled: bool = True,
                 interval: float = 0.5, line_every: float = 30.0):
        self.board, self.total, self.unit = board, total, unit
        self.describe, self.position = describe, position
        self.enabled, self.interval, self.line_every = enabled, interval, line_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True, name="centernet-progress")
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import ray
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        bar = tqdm(total=self.total, unit=self.unit, dynamic_ncols=True, disable=not tty, leave=False)
        last_line, last_text = 0.0, ""
        try:
            while not self._stop.wait(self.interval):
                try:
                    state = ray.get(self.board.get.remote(), timeout=5)
                except Exception:  # the actor is gone or busy: try again at the next tick
                    continue
                if not state["progress"]:
                    continue
                text = self.describe(state)
                bar.n = min(self.position(state), self.total)
                bar.set_postfix_str(text, refresh=True)
                if not tty and text != last_text and time.monotonic() - last_line > self.line_every:
                    last_line, last_text = time.monotonic(), text
                    print(text, file=sys.stderr, flush=True)
        finally:
            bar.close()
