"""`centernet precompute`: help with examples, and a real run (own local Ray) on synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from centernet.synthetic import make_synthetic_coco

CLI = [sys.executable, "-m", "workflows.cli", "precompute"]


def test_help_lists_options_and_examples():
    res = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for option in ("--images", "--annotations", "--out", "--input-size", "--workers", "--views",
                   "--no-augment", "--radius-variant", "--image-format", "--address", "--seed", "--max-objs",
                   "Examples"):
        assert option in res.stdout, option


def test_cli_run_writes_a_manifest(tmp_path):
    ds = make_synthetic_coco(tmp_path / "data", 12, seed=2, image_size=(80, 140))
    out = tmp_path / "shards"
    args = ["--images", str(ds.images_dir), "--annotations", str(ds.annotations), "--out", str(out),
            "--input-size", "128", "--workers", "2", "--views", "2", "--radius-variant", "corrected",
            "--chunk-size", "4", "--image-format", "png", "--quiet"]
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 24 and len(manifest["shards"]) == 3
    assert manifest["settings"]["sample"]["radius_variant"] == "corrected"
    assert manifest["settings"]["image_format"] == "png"
    assert "12 in, 12 accepted" in res.stdout and "24 samples" in res.stdout
    bad = subprocess.run([*CLI, *args[:6], "--input-size", "100"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "multiple of 32" in bad.stdout + bad.stderr
