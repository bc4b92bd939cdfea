"""Multi-node DDP: a two-node Ray cluster on loopback, one training worker per node, each node
reading only its share of the shards."""

from __future__ import annotations

import os

import pytest
from ray.cluster_utils import Cluster

from centernet.synthetic import make_synthetic_coco
from pipeline.precompute import precompute
from pipeline.reader import samples_per_rank
from pipeline.schema import PrecomputeSettings
from workflows.train import run_training
from workflows.train_config import TrainConfig

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data = make_synthetic_coco(root / "coco", 12, seed=0, image_size=(96, 128))
    precompute(data.images_dir, data.annotations, root / "train", PrecomputeSettings.of(input_size=64),
               chunk_size=3, workers=2, progress=False)  # starts and stops its own local Ray
    return root / "train"


@pytest.fixture
def two_nodes(tmp_path_factory):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Two raylets on this machine (each its own node, 1 CPU each), all on 127.0.0.1: conftest sets
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 so that Ray resolves this node's address to loopback.
    import ray._private.services as services

    assert services.get_node_ip_address() == "127.0.0.1", "Ray would use a non-loopback address"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "temp_dir": str(tmp_path_factory.mktemp("ray"))})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_one_worker_per_node_each_reads_its_share(shards, two_nodes, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    cfg = TrainConfig(pretrained="none", data=str(shards), epochs=1, batch_size=2, num_workers=2, lr=1e-3, loader_workers=0,
                      storage_path=str(tmp_path / "results"), name="two-nodes")
    out = run_training(cfg, address=two_nodes.address, show_progress=False)
    shares = sorted(out.summary["shares"], key=lambda s: s["rank"])
    assert len({s["node_id"] for s in shares}) == 2  # one worker on each node
    ids = [set(s["image_ids"]) for s in shares]
    assert not ids[0] & ids[1]  # disjoint shares
    assert len(ids[0] | ids[1]) == 12  # together: every sample once
    assert [len(s["image_ids"]) for s in shares] == samples_per_rank(shards, 2)
    assert out.metrics["epoch"] == 0 and out.metrics["images"] == 12
