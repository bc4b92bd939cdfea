"""The pipeline's pure parts: cache keys, which failures are transient, --set parsing, step plans."""

from __future__ import annotations

import pytest

from workflows.errors import JobFailed, UserError
from workflows.flow.caching import fail_once_hook, is_transient, step_key
from workflows.flow.config import apply_overrides, parse_overrides
from workflows.flow.pipeline import StepPlan


def test_step_key_depends_on_step_and_inputs_not_their_order():
    a = step_key("train", {"train": {"epochs": 3, "lr": None}, "data": {"train": "abc"}})
    assert a == step_key("train", {"data": {"train": "abc"}, "train": {"lr": None, "epochs": 3}})
    assert a != step_key("train", {"train": {"epochs": 4, "lr": None}, "data": {"train": "abc"}})
    assert a != step_key("evaluate", {"train": {"epochs": 3, "lr": None}, "data": {"train": "abc"}})
    assert a.startswith("train-") and len(a) == len("train-") + 32
    with pytest.raises(ValueError, match="unknown step 'trian'"):
        step_key("trian", {})


class RaySystemError(Exception):  # named like Ray's: transient by name
    pass


def test_transient_failures_are_found_in_the_cause_chain():
    assert is_transient(ConnectionError("reset"))
    assert is_transient(TimeoutError("slow"))
    assert is_transient(RaySystemError("gcs"))
    try:
        try:
            raise ConnectionResetError("peer")  # a ConnectionError subclass
        except ConnectionResetError as exc:
            raise JobFailed("training failed: connection reset") from exc
    except JobFailed as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(UserError("bad option"))
    assert not is_transient(ValueError("bad data"))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(None)


def test_fail_once_hook_fails_only_the_named_step_once(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("CENTERNET_FLOW_FAIL_ONCE", f"train:{marker}")
    fail_once_hook("evaluate")  # another step: nothing
    with pytest.raises(ConnectionError, match="injected transient failure of step train"):
        fail_once_hook("train")
    assert marker.is_file()
    fail_once_hook("train")  # the second attempt goes through


def test_overrides_are_yaml_values_set_into_sections():
    parsed = parse_overrides(["train.epochs=3", "precompute.train.sample.input_size=[96, 96]", "register.name=x",
                              "evaluate.flip=false"])
    assert parsed == [(["train", "epochs"], 3), (["precompute", "train", "sample", "input_size"], [96, 96]),
                      (["register", "name"], "x"), (["evaluate", "flip"], False)]
    base = {"train": {"epochs": 1, "arch": "resnet18"}}
    out = apply_overrides(base, parsed)
    assert out["train"] == {"epochs": 3, "arch": "resnet18"} and base["train"]["epochs"] == 1
    assert out["precompute"]["train"]["sample"]["input_size"] == [96, 96]
    with pytest.raises(ValueError, match="train.arch is not a section"):
        apply_overrides(base, parse_overrides(["train.arch.x=1"]))


def test_step_plans():
    plain = StepPlan()
    assert not any(plain.refresh(s) or plain.skipped(s) for s in ("data", "train", "predict"))
    later = StepPlan(start_from="train")
    assert [later.refresh(s) for s in ("data", "tune", "train", "register", "predict")] == [False, False, True, True, True]
    only = StepPlan(only="register")
    assert [only.refresh(s) for s in ("train", "register", "evaluate")] == [False, True, False]
    assert [only.skipped(s) for s in ("train", "register", "evaluate", "predict")] == [False, False, True, True]
    with pytest.raises(UserError, match="--from trian: not a step"):
        StepPlan(start_from="trian")
    with pytest.raises(UserError, match="not both"):
        StepPlan(start_from="train", only="evaluate")
