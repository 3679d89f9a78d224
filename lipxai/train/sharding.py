"""Data parallelism over a ``jax.sharding.Mesh``: the batch is sharded, the state replicated.

The same code runs on one CPU and on N devices (or hosts): each process feeds its
local slice of the global batch, assembled into one global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (or the given) devices with the axis ``"data"``."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
    if global_batch % mesh.size:
        raise ValueError(f"batch_size {global_batch} must be divisible by the number of devices {mesh.size}")


def put_batch(local_batch, mesh: Mesh):
    """Assemble per-process numpy batches into global arrays sharded along ``"data"``."""
    sharding = batch_sharded(mesh)
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, a), local_batch)


def put_replicated(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
