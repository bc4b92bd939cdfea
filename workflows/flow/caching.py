"""What makes a step's result reusable, and which failures are worth another try.

A step's cache key is the sha256 of its name, its inputs (its config section and the hashes of its
upstream outputs: the shards' manifest hash, the chosen weights, the checkpoint's sha256) and its
code version (the source of the modules that do its work). Prefect looks the key up in the results
directory (``cache_key_fn``); the flow computes it with :func:`step_key`.

Retries: only transient failures (a dropped connection, a timeout, a Ray system error — anywhere in
the exception's cause chain) are retried; a bad config or bad data (``UserError``, ``ValueError``,
a missing file) fails at once.

Test hook: ``CENTERNET_FLOW_FAIL_ONCE=STEP:MARKER_FILE`` makes step ``STEP`` raise
``ConnectionError`` on its first attempt (while ``MARKER_FILE`` does not exist; the attempt creates
it), so that a test can watch a real retry. Never set it outside tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

FAIL_ONCE_ENV = "CENTERNET_FLOW_FAIL_ONCE"

# The modules whose source is each step's code version, besides the step's own function in
# workflows.flow.steps (named like the step, except precompute_split).
STEP_MODULES: dict[str, tuple[str, ...]] = {
    "synthesize": ("centernet.synthetic",),
    "precompute": ("pipeline.precompute", "pipeline.schema", "pipeline.validate", "pipeline.augment",
                   "centernet.targets", "centernet.sample"),
    "tune": ("workflows.tune", "workflows.tune_config", "workflows.train", "workflows.train_worker"),
    "train": ("workflows.train", "workflows.train_worker", "workflows.train_config", "centernet.engine",
              "centernet.losses", "centernet.schedule"),
    "register": ("workflows.register", "workflows.pyfunc_model"),
    "evaluate": ("workflows.evaluate", "centernet.inference", "centernet.evaluate"),
    "predict": ("workflows.predict", "centernet.detect", "centernet.visualize"),
}
# Exception class names (anywhere in the MRO) that mean "try again": connection drops, timeouts,
# Ray's own system failures, MLflow/requests timeouts.
TRANSIENT_NAMES = frozenset({"ConnectionError", "TimeoutError", "Timeout", "ReadTimeout", "ConnectTimeout",
                             "RaySystemError", "GetTimeoutError", "ActorUnavailableError", "RpcError"})


@lru_cache(maxsize=None)
def code_version(step: str) -> str:
    """sha256 (16 hex) of the source of ``step``'s modules and of its function in
    :mod:`workflows.flow.steps`."""
    import inspect

    from workflows.flow import steps

    if step not in STEP_MODULES:
        raise ValueError(f"unknown step {step!r}; valid: {', '.join(STEP_MODULES)}")
    function = getattr(steps, "precompute_split" if step == "precompute" else step)
    digest = hashlib.sha256(inspect.getsource(function).encode())
    for name in STEP_MODULES[step]:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:  # an optional step whose code is not installed
            digest.update(f"{name}:absent".encode())
            continue
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    return digest.hexdigest()[:16]


def step_key(step: str, inputs: Mapping[str, Any]) -> str:
    """The cache key of ``step`` with ``inputs`` (JSON-able: config sections, upstream hashes)."""
    payload = json.dumps({"step": step, "code": code_version(step), "inputs": inputs}, sort_keys=True,
                         default=str)
    return f"{step}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


# The keys of a step's result that name what it wrote (a directory or a file).
OUTPUT_KEYS = ("dir", "checkpoint", "report", "picture", "detections", "images", "annotations")


def missing_outputs(result: Any) -> list[str]:
    """The paths and URIs named in ``result`` (a step's result, nested dicts included) that no longer
    exist: a cached result whose outputs were deleted must be made again."""
    from workflows.flow.remote_results import output_exists

    gone: list[str] = []
    if not isinstance(result, Mapping):
        return gone
    for key, value in result.items():
        if isinstance(value, Mapping):
            gone += missing_outputs(value)
        elif key in OUTPUT_KEYS and isinstance(value, str) and value and not output_exists(value):
            gone.append(value)
    return gone


def cache_key_from_parameters(context: Any, parameters: Mapping[str, Any]) -> str:
    """Prefect ``cache_key_fn``: every step task takes its precomputed key as parameter ``key``."""
    return str(parameters["key"])


def is_transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` or anything in its cause chain is a transient failure (see module docstring)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(cls.__name__ in TRANSIENT_NAMES for cls in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed step only after a transient failure."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as raised:  # the result could not be read: judge what was raised
        exc = raised
    return isinstance(exc, BaseException) and is_transient(exc)


def fail_once_hook(step: str) -> None:
    """The ``CENTERNET_FLOW_FAIL_ONCE`` test hook (module docstring); nothing when it is unset."""
    spec = os.environ.get(FAIL_ONCE_ENV, "")
    name, sep, marker = spec.partition(":")
    if not sep or name != step or Path(marker).exists():
        return
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).write_text("failed once\n")
    raise ConnectionError(f"injected transient failure of step {step} (test hook {FAIL_ONCE_ENV})")


def file_sha256(path: str | Path) -> str:
    """sha256 (16 hex) of a local file or a URI readable through ``pyarrow.fs``."""
    from pipeline.shards import read_bytes, resolve, sha256

    fs, where = resolve(str(path))
    return sha256(read_bytes(fs, where))[:16]
