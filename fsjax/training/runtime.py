"""The run context: the device mesh, the train state's shardings, the precision policy and
whether this process is the one that writes files.

Built once per run (`Runtime.create`) and handed to everything that places arrays or writes
files, so nothing is module-global and scaling out lives in one place: FSDP is the
`leaf_sharding` rule (a state sharding tree is made from it, as big_vision and MaxText derive
theirs from the abstract state) on a `data` x `fsdp` mesh, and multi-host is the mesh over every
process's devices plus which process is primary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from fsjax.config import ConfigError, ExperimentConfig
from fsjax.nn.precision import Policy
from fsjax.optim.loss_scale import DynamicLossScale
from fsjax.training import sharding


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where a run computes and who writes.

    Attributes:
        mesh: the devices: a `data` axis, and an `fsdp` axis with `sharding.fsdp` > 1 (the
            batch is split over all of them; the state over `fsdp`).
        policy: the layers' compute dtype and the parameters' dtype (`model.dtype`).
        is_primary: this is process 0, the only one that writes the model folder's files and
            prints (orbax's checkpoint saves are collective: every process takes part).
        state_sharding: a TrainState-shaped tree with a sharding per leaf (`with_state`).
        loss_scale: the dynamic loss scale rule under the float16 policy, else None.
    """

    mesh: Mesh
    policy: Policy
    is_primary: bool
    state_sharding: Any = None
    loss_scale: DynamicLossScale | None = None
    fsdp_min_size: int = 2**16

    @classmethod
    def create(cls, config: ExperimentConfig, devices: list[jax.Device] | None = None
               ) -> Runtime:
        """The context for `config` on all (or the given) devices; the batch size must split
        evenly over them."""
        mesh = sharding.make_mesh(devices)
        if config.sharding.fsdp > 1:
            try:
                mesh = sharding.fsdp_mesh(mesh, config.sharding.fsdp)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        sharding.check_batch_size(config.train.batch_size, mesh)
        policy = Policy.named(config.model.dtype)
        return cls(mesh=mesh, policy=policy, is_primary=jax.process_index() == 0,
                   loss_scale=DynamicLossScale.configured(config) if policy.loss_scaling else None,
                   fsdp_min_size=config.sharding.fsdp_min_size)

    @classmethod
    def on_mesh(cls, mesh: Mesh, state: Any, policy: Policy | None = None) -> Runtime:
        """The context of this process on `mesh` for `state` (arrays or their shapes): what
        benchmarks and tests that build a step by hand need."""
        policy = Policy() if policy is None else policy
        return cls(mesh=mesh, policy=policy, is_primary=jax.process_index() == 0,
                   loss_scale=DynamicLossScale() if policy.loss_scaling else None,
                   ).with_state(state)

    @property
    def fsdp(self) -> int:
        """Devices on the `fsdp` axis (1: the state is replicated)."""
        return dict(self.mesh.shape).get("fsdp", 1)

    def leaf_sharding(self, leaf: Any) -> NamedSharding:
        """How one state array (anything with a `.shape`) is placed: replicated on every device,
        or with FSDP split along its largest axis that `fsdp` divides (small arrays whole)."""
        spec = sharding.fsdp_spec(tuple(leaf.shape), self.fsdp, self.fsdp_min_size)
        return NamedSharding(self.mesh, spec)

    def shardings_for(self, tree: Any) -> Any:
        """A sharding per leaf of `tree` (arrays or ShapeDtypeStructs of any layout, such as a
        save's metadata), by `leaf_sharding`."""
        return jax.tree.map(self.leaf_sharding, tree)

    def with_state(self, abstract_state: Any) -> Runtime:
        """This context with the sharding tree of a train state (`jax.eval_shape` of its init)."""
        return dataclasses.replace(self, state_sharding=self.shardings_for(abstract_state))

    @property
    def replicated(self) -> NamedSharding:
        """For scalars and keys every device holds whole (the step's rng, its metrics)."""
        return sharding.replicated(self.mesh)

    @property
    def batch_sharding(self) -> NamedSharding:
        return sharding.batch_sharded(self.mesh)

    def replicate_key(self, key: jax.Array) -> jax.Array:
        """A PRNG key held whole by every device of every process (`jax.device_put` cannot
        place key arrays on devices of other processes; their raw bits can be)."""
        bits = np.asarray(jax.random.key_data(key))
        data = jax.make_array_from_callback(bits.shape, self.replicated, lambda index: bits[index])
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))

    def to_global(self, batch: Any) -> Any:
        """This process's numpy batch as global arrays split along the batch axis."""
        return sharding.to_global(batch, self.batch_sharding)

