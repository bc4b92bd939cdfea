"""The ``centernet`` console script: every command has --help with examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workflows.cli import COMMANDS

CLI = str(Path(sys.executable).with_name("centernet"))


def test_top_level_help_lists_every_command():
    proc = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_has_examples(name):
    proc = subprocess.run([CLI, name, "--help"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "Examples" in proc.stdout and f"centernet {name}" in proc.stdout


def test_unknown_command_fails():
    proc = subprocess.run([CLI, "no-such-command"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
