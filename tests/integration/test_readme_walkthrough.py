"""The README's laptop walkthrough, run as written: its command lines are read from the README's
code block (so the two cannot drift apart), in a fresh directory, with relative paths; only the
sizes are scaled down, by options the README itself documents."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- walkthrough: tests/integration/test_readme_walkthrough.py -->"
BIN = Path(sys.executable).parent
# Sizes only: appended to the README's own command lines (later options win).
SCALE_DOWN = {
    "demo": ["--epochs", "1", "--train-images", "16", "--val-images", "8"],
    "precompute": ["--views", "1", "--workers", "1"],
    "train": ["--epochs", "1", "--workers", "1", "--batch-size", "8", "--loader-workers", "0"],
}
NOT_RUN = ("source ", "mlflow ui", "prefect server start")  # shell set-up and long-running servers


def walkthrough_commands(text: str) -> list[str]:
    """The command lines of the code block after the walkthrough marker, continuations joined,
    comments dropped."""
    block = text.split(MARKER, 1)[1]
    body = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_readme_documents_every_scaling_option():
    text = README.read_text()
    for options in SCALE_DOWN.values():
        for flag in options[::2]:
            assert f"`{flag}" in text or f" {flag} " in text, f"{flag} is not documented in the README"


def test_readme_walkthrough_runs_as_written(tmp_path):
    commands = walkthrough_commands(README.read_text())
    assert [c.split()[1] for c in commands if c.startswith("centernet ")] == \
        ["demo", "precompute", "precompute", "train"], commands
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    outputs = {}
    for line in commands:
        if line.startswith(NOT_RUN):
            continue
        argv = shlex.split(line)
        assert argv[0] == "centernet", line
        argv += SCALE_DOWN.get(argv[1], [])
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs[argv[1]] = done.stdout + done.stderr
    assert (tmp_path / "shards" / "train" / "manifest.json").is_file()
    assert (tmp_path / "mlruns.db").is_file() and (tmp_path / "ray_results").is_dir()
    assert "val/AP50" in outputs["train"]
