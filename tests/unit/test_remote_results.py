"""A pipeline's results directory at a URI (``workflows.flow.remote_results``), on ``file://`` URIs:
the same ``pyarrow.fs`` code path as ``s3://`` (which tests/integration/test_real_services_e2e.py
runs against an S3 server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows.flow.caching import missing_outputs
from workflows.flow.remote_results import _storage_class, output_exists, staged_output


def test_staged_file_and_directory_are_uploaded_to_the_uri(tmp_path):
    remote = tmp_path / "bucket" / "results"
    with staged_output(f"file://{remote}/evaluation.json") as local:
        assert not str(local).startswith(str(remote))
        local.write_text(json.dumps({"AP": 0.5}))
    assert json.loads((remote / "evaluation.json").read_text()) == {"AP": 0.5}
    assert not local.exists()  # the staging folder is gone

    with staged_output(f"file://{remote}/predictions") as local:
        (local / "images").mkdir(parents=True)
        (local / "images" / "a.jpg").write_bytes(b"jpg")
        (local / "predictions.png").write_bytes(b"png")
    assert (remote / "predictions" / "images" / "a.jpg").read_bytes() == b"jpg"
    assert (remote / "predictions" / "predictions.png").read_bytes() == b"png"


def test_nothing_is_uploaded_when_the_step_fails(tmp_path):
    remote = tmp_path / "bucket"
    with pytest.raises(RuntimeError), staged_output(f"file://{remote}/evaluation.json") as local:
        local.write_text("{}")
        raise RuntimeError("the step failed")
    assert not (remote / "evaluation.json").exists()


def test_a_local_target_is_written_in_place(tmp_path):
    with staged_output(str(tmp_path / "out")) as local:
        assert local == tmp_path / "out"


def test_missing_outputs_checks_local_paths_and_uris(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    present, gone = f"file://{tmp_path}/report.json", f"file://{tmp_path}/predictions.png"
    assert output_exists(present) and not output_exists(gone)
    assert missing_outputs({"report": present, "nested": {"picture": gone}, "run_id": "not a path"}) == [gone]
    local_gone = str(tmp_path / "shards" / "train")
    assert missing_outputs({"dir": local_gone, "report": str(tmp_path / "report.json")}) == [local_gone]


def test_the_storage_block_keeps_records_under_its_base_path(tmp_path):
    block = _storage_class()(basepath=f"file://{tmp_path}/cache/")
    root = block._resolve_path("")
    assert root == str(tmp_path / "cache")
    key = block._resolve_path("train-0123")
    assert key == f"{root}/train-0123" and block._resolve_path(key) == key  # resolving twice changes nothing
    # what Prefect's ResultStore does with a path-based block's keys
    assert str(Path(key).relative_to(root)) == "train-0123"

    assert block.write_path("train-0123", b'{"seconds": 1.0}', _sync=True) == key
    assert (tmp_path / "cache" / "train-0123").read_bytes() == b'{"seconds": 1.0}'
    assert block.read_path(key, _sync=True) == b'{"seconds": 1.0}'
    with pytest.raises(FileNotFoundError):
        block.read_path("not-there", _sync=True)  # Prefect takes any error as "no cached result"
