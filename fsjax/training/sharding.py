"""Device mesh and shardings: data parallel over a `data` axis, optionally FSDP over `fsdp`.

Most face-swap models have at most a few hundred million parameters, so replicating them and
splitting the batch is the default (reference/style.md §8.2). Phaze-A at 512 or 1024 px, or a
large batch, may not fit beside a full copy of the state on every device: `fsdp_mesh` splits the
devices into `data` x `fsdp` and `fsdp_spec` shards each large array along `fsdp` (XLA gathers
the weights where a layer needs them). Either way one jitted step with explicit shardings runs
unchanged on one CPU, several GPUs or a TPU host.
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


def fsdp_mesh(mesh: Mesh, fsdp: int) -> Mesh:
    """The same devices as a `data` x `fsdp` mesh with `fsdp` devices on the second axis."""
    devices = np.asarray(mesh.devices).reshape(-1)
    if fsdp < 1 or devices.size % fsdp:
        raise ValueError(f"sharding.fsdp={fsdp} must divide the {devices.size} devices in use")
    return Mesh(devices.reshape(devices.size // fsdp, fsdp), ("data", "fsdp"))


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> PartitionSpec:
    """Shards the largest axis that `fsdp` divides; small or indivisible arrays stay whole."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    fits = [axis for axis, n in enumerate(shape) if n % fsdp == 0]
    if not fits:
        return PartitionSpec()
    axis = max(fits, key=lambda a: (shape[a], -a))
    return PartitionSpec(*[("fsdp" if a == axis else None) for a in range(len(shape))])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device (`data`, and `fsdp` where there is one)."""
    axes = tuple(mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(axes if len(axes) > 1 else axes[0]))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Each device needs the same number of faces per side."""
    n = mesh.size
    if batch_size % n:
        raise ValueError(
            f"train.batch_size={batch_size} must be a multiple of the {n} devices in use"
        )


def to_global(batch: Any, sharding: NamedSharding) -> Any:
    """Turns this process's numpy batch into global arrays split along the batch axis."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )
