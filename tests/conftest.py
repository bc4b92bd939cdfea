"""Shared fixtures. Tests are tiered: unit/ (pure functions), contract/ (schemas, CLI, import
rules), integration/ (real Ray, real MLflow, small synthetic data)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """A small synthetic COCO dataset (24 images, category ids 2, 7, 90)."""
    from centernet.synthetic import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp("shapes"), 24, seed=11, category_ids=(2, 7, 90))
