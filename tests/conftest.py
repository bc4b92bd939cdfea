"""Shared fixtures. Tests are tiered: unit/ (pure functions), contract/ (schemas, CLI, import
rules), integration/ (real Ray, real MLflow, small synthetic data)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep every Ray node, driver and worker of the tests on loopback: with this, Ray's
# get_node_ip_address() answers 127.0.0.1 instead of the machine's interface address (must be set
# before ray is imported; run_tests.sh exports it too, for subprocesses).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """A small synthetic COCO dataset (24 images, category ids 2, 7, 90)."""
    from centernet.synthetic import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp("shapes"), 24, seed=11, category_ids=(2, 7, 90))


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """The embedded Ray instance (2 CPUs, no dashboard, loopback only) for one test module."""
    from pipeline.ray_local import local_ray

    with local_ray(num_cpus=2, dashboard=False, temp_dir=str(tmp_path_factory.mktemp("ray"))) as ray_info:
        yield ray_info
