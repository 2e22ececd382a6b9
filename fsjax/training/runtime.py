"""The run context: the device mesh, the train state's shardings, the precision policy and
whether this process is the one that writes files.

Built once per run (`Runtime.create`) and handed to everything that places arrays or writes
files, so nothing is module-global and scaling out changes one place: FSDP only changes
`leaf_sharding` (the rule a state sharding tree is made from, as big_vision and MaxText derive
theirs from the abstract state), and multi-host only changes which process is primary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fsjax.config import ExperimentConfig
from fsjax.nn.precision import Policy
from fsjax.optim.loss_scale import DynamicLossScale
from fsjax.training import sharding


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where a run computes and who writes.

    Attributes:
        mesh: the devices, one `data` axis (the batch is split over it).
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

    @classmethod
    def create(cls, config: ExperimentConfig, devices: list[jax.Device] | None = None
               ) -> Runtime:
        """The context for `config` on all (or the given) devices; the batch size must split
        evenly over them."""
        mesh = sharding.make_mesh(devices)
        sharding.check_batch_size(config.train.batch_size, mesh)
        policy = Policy.named(config.model.dtype)
        return cls(mesh=mesh, policy=policy, is_primary=jax.process_index() == 0,
                   loss_scale=DynamicLossScale.configured(config) if policy.loss_scaling else None)

    @classmethod
    def on_mesh(cls, mesh: Mesh, state: Any, policy: Policy | None = None) -> Runtime:
        """The context of this process on `mesh` for `state` (arrays or their shapes): what
        benchmarks and tests that build a step by hand need."""
        policy = Policy() if policy is None else policy
        return cls(mesh=mesh, policy=policy, is_primary=jax.process_index() == 0,
                   loss_scale=DynamicLossScale() if policy.loss_scaling else None,
                   ).with_state(state)

    def leaf_sharding(self, leaf: Any) -> NamedSharding:
        """How one state array (anything with a `.shape`) is placed: replicated on every device
        (data parallel; the models are small enough)."""
        del leaf
        return NamedSharding(self.mesh, PartitionSpec())

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

    def to_global(self, batch: Any) -> Any:
        """This process's numpy batch as global arrays split along the batch axis."""
        return sharding.to_global(batch, self.batch_sharding)

