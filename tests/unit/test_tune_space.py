"""The search space of ``centernet tune``: defaults, YAML overlays, the Ray Tune domains they
become, and a precise error for every bad entry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ray.tune.search.sample import Categorical, Float, LogUniform, Uniform

from workflows.tune_space import DEFAULT_SPACE, Dimension, load_space, parse_space, trial_settings


def test_default_space_is_the_three_loss_weights():
    assert list(DEFAULT_SPACE.dims) == ["hm", "wh", "reg"]
    assert DEFAULT_SPACE.dims["hm"] == Dimension("fixed", (1.0,))
    assert DEFAULT_SPACE.dims["wh"] == Dimension("loguniform", (0.01, 1.0))
    assert DEFAULT_SPACE.dims["reg"] == Dimension("loguniform", (0.1, 10.0))
    assert DEFAULT_SPACE.searched() == ["wh", "reg"]
    assert DEFAULT_SPACE.to_params() == {"space.hm": "1", "space.wh": "loguniform(0.01, 1)",
                                         "space.reg": "loguniform(0.1, 10)"}


def test_default_space_as_tune_domains_samples_inside_its_ranges():
    space = DEFAULT_SPACE.to_tune()
    assert space["hm"] == 1.0
    wh, reg = space["wh"], space["reg"]
    assert isinstance(wh, Float) and isinstance(wh.get_sampler(), LogUniform)
    assert (wh.lower, wh.upper, reg.lower, reg.upper) == (0.01, 1.0, 0.1, 10.0)
    samples = np.array(wh.sample(size=2000, random_state=np.random.default_rng(0)))
    assert samples.min() >= 0.01 and samples.max() <= 1.0
    # log-uniform: half of the samples below the geometric middle of [0.01, 1], 0.1
    assert abs((samples < 0.1).mean() - 0.5) < 0.05


def test_a_file_overlays_the_defaults(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("hm: 2\nreg: {uniform: [0.5, 2]}\nlr: {choice: [1e-3, 2e-3]}\n")
    space = load_space(path)
    assert list(space.dims) == ["hm", "wh", "reg", "lr"]  # declared order, whatever the file's
    assert space.dims["hm"] == Dimension("fixed", (2.0,))
    assert space.dims["wh"] == DEFAULT_SPACE.dims["wh"]  # kept
    assert space.dims["reg"] == Dimension("uniform", (0.5, 2.0))
    assert space.dims["lr"] == Dimension("choice", (1e-3, 2e-3))
    assert space.searched() == ["wh", "reg", "lr"]
    tune = space.to_tune()
    assert isinstance(tune["reg"].get_sampler(), Uniform) and (tune["reg"].lower, tune["reg"].upper) == (0.5, 2.0)
    assert isinstance(tune["lr"], Categorical) and tune["lr"].categories == [1e-3, 2e-3]
    assert parse_space(space.to_dict(), base=parse_space({})) == space  # round trip through plain data


def test_a_choice_of_one_value_is_not_searched():
    space = parse_space({"wh": {"choice": [0.1]}, "reg": 1})
    assert space.searched() == []
    assert space.dims["wh"].describe() == "choice(0.1)"


def test_empty_file_means_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_space(path) == DEFAULT_SPACE


@pytest.mark.parametrize("data, phrase", [
    ({"cls": 1}, "unknown key 'cls'; valid keys: hm, wh, reg, lr"),
    ({"wh": {"loguniform": [-0.1, 1]}}, "wh: must not be negative, got -0.1"),
    ({"wh": -1}, "wh: must not be negative, got -1"),
    ({"wh": {"uniform": [1, 1]}}, "wh: low must be below high, got low 1 >= high 1"),
    ({"reg": {"loguniform": [10, 0.1]}}, "reg: low must be below high, got low 10 >= high 0.1"),
    ({"wh": {"loguniform": [0, 1]}}, "wh: loguniform bounds must be > 0, got 0"),
    ({"wh": {"uniform": [0.1]}}, "wh: uniform needs [low, high], got [0.1]"),
    ({"wh": {"normal": [0, 1]}}, "wh: unknown kind 'normal'"),
    ({"wh": {"choice": []}}, "wh: choice needs at least one value"),
    ({"wh": {"choice": 0.1}}, "wh: choice needs a list, got 0.1"),
    ({"wh": {"uniform": [0.1, 1], "choice": [1]}}, "wh: expected one of"),
    ({"wh": "x"}, "wh: expected a number, got 'x'"),
    ({"wh": True}, "wh: expected a number, got True"),
    ({"wh": {"uniform": [0.1, float("inf")]}}, "wh.uniform: expected a finite number"),
    ({"lr": 1.5}, "lr: a learning rate must be in (0, 1), got 1.5"),
    ({"lr": {"uniform": [0, 0.01]}}, "lr: a learning rate must be in (0, 1), got 0"),
])
def test_bad_entries_name_the_file_and_key(data, phrase):
    with pytest.raises(ValueError) as err:
        parse_space(data, source="space.yaml")
    assert str(err.value).startswith("space.yaml"), str(err.value)
    assert phrase in str(err.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="nowhere.yaml: search space file not found"):
        load_space(tmp_path / "nowhere.yaml")
    (tmp_path / "broken.yaml").write_text("wh: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        load_space(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- wh\n- reg\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        load_space(tmp_path / "list.yaml")


def test_trial_settings_split_weights_and_lr():
    assert trial_settings({"hm": 1, "wh": 0.05, "reg": 2.5}) == ({"hm": 1.0, "wh": 0.05, "reg": 2.5}, None)
    weights, lr = trial_settings({"wh": 0.2, "lr": 3e-3})
    assert weights == {"wh": 0.2} and math.isclose(lr, 3e-3)
