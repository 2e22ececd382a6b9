"""Device mesh and shardings: data parallel over a `data` axis, parameters replicated.

Face-swap models have at most a few hundred million parameters, so replicating them and splitting
the batch is the whole strategy (reference/style.md §8.2); one jitted step with explicit shardings
runs unchanged on one CPU, several GPUs or a TPU host.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over all (or the given) devices."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Each device needs the same number of faces per side."""
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(
            f"train.batch_size={batch_size} must be a multiple of the {n} devices in use"
        )


def to_global(batch: Any, sharding: NamedSharding) -> Any:
    """Turns this process's numpy batch into global arrays split along the batch axis."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )
