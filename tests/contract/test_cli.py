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


def test_readme_option_tables_match_the_declarations():
    """The README's option tables are generated from the config declarations; a field added,
    renamed or re-documented without regenerating them fails here."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "update_readme_options.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_training_field_is_an_option_with_its_default():
    import dataclasses

    from workflows.train_config import TrainConfig

    proc = subprocess.run([CLI, "train", "--help"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "400", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    for f in dataclasses.fields(TrainConfig):
        flag = (f.metadata["centernet"]["flag"] or "--" + f.name.replace("_", "-")).split("/")[0]
        assert flag in proc.stdout, f"{f.name} has no option"
    assert "[default: 140]" in proc.stdout and "[default: hm=1,wh=0.1,reg=1]" in proc.stdout


def test_train_defaults_are_the_shared_schedule_defaults():
    from centernet.schedule import DEFAULT_MAX_GRAD_NORM, DEFAULT_WARMUP_STEPS, default_lr, default_lr_steps
    from workflows.train_config import TrainConfig

    config = TrainConfig(data="d", pretrained="none", epochs=36)
    assert config.max_grad_norm == DEFAULT_MAX_GRAD_NORM
    assert config.effective_warmup_steps == DEFAULT_WARMUP_STEPS
    from centernet.config_fields import field_info

    assert str(DEFAULT_WARMUP_STEPS) in field_info(TrainConfig.__dataclass_fields__["warmup_steps"])["default_text"]
    assert config.effective_lr == default_lr(config.global_batch_size, pretrained=False)
    assert config.effective_lr_steps == default_lr_steps(36) == (23, 31)
