"""torch.distributed on one machine without a listening rendezvous server.

Ray Train sets up the process group with ``env://`` (or ``tcp://``), whose store, a ``TCPStore`` on
rank 0, listens on every interface (``::``/``0.0.0.0``; PyTorch has no setting to bind it to one
address). For the embedded, single-machine Ray instance this module's :class:`LocalTorchConfig`
rendezvouses through a ``FileStore`` in a fresh file instead (``file://`` init method) and pins
gloo's pair sockets to the loopback interface, so a local training job listens on loopback only.
On a cluster the default ``TorchConfig`` is used.

It builds on Ray Train's torch backend (``ray.train.torch.config``): the same process-group set-up
function and environment variables, with only the init method changed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

LOOPBACK_INTERFACE = "lo0" if sys.platform == "darwin" else "lo"


class _FileRendezvousBackend(_TorchBackend):
    def on_start(self, worker_group: Any, backend_config: "LocalTorchConfig") -> None:
        import ray

        store = os.path.join(backend_config.store_dir or tempfile.gettempdir(),
                             f"centernet-rendezvous-{uuid.uuid4().hex}")  # new for every (re)start
        worker_group.execute(_set_torch_distributed_env_vars)
        futures = [worker_group.execute_single_async(i, _setup_torch_process_group,
                                                      backend=backend_config.backend or "gloo", world_rank=i,
                                                      world_size=len(worker_group), init_method=f"file://{store}",
                                                      timeout_s=backend_config.timeout_s)
                   for i in range(len(worker_group))]
        ray.get(futures)


@dataclass
class LocalTorchConfig(TorchConfig):
    """``TorchConfig`` whose process group meets through a file (``store_dir``: where it lies)."""

    store_dir: str | None = None

    @property
    def backend_cls(self) -> type:
        return _FileRendezvousBackend


def loopback_worker_env() -> dict[str, str]:
    """Worker environment that keeps gloo's and NCCL's connections on the loopback interface."""
    return {"GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE, "NCCL_SOCKET_IFNAME": LOOPBACK_INTERFACE}
