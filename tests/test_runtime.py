"""The run context: mesh, per-leaf state shardings, precision policy, primary process."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from tiny_model import TinyAutoencoder

from fsjax.config import ConfigError, ExperimentConfig, ModelConfig, TrainConfig
from fsjax.nn.precision import Policy
from fsjax.training.runtime import Runtime
from fsjax.training.state import TrainState
from fsjax.training.step import init_state, make_init_fn


def _config(**model):
    return ExperimentConfig(model=ModelConfig(**model), train=TrainConfig(batch_size=8))


def test_create_spans_every_device_with_the_configured_policy():
    runtime = Runtime.create(_config(dtype="bfloat16"))
    assert runtime.mesh.shape == {"data": 8} and runtime.is_primary
    assert runtime.policy == Policy(jnp.bfloat16, jnp.float32)
    assert runtime.policy.name == "bfloat16" and runtime.state_sharding is None
    assert runtime.batch_sharding.spec == PartitionSpec("data")
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        Runtime.create(dataclasses.replace(_config(), train=TrainConfig(batch_size=12)))


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown precision policy 'float64'"):
        Policy.named("float64")
    with pytest.raises(ConfigError):
        ModelConfig(dtype="float64")


def test_the_state_sharding_is_a_tree_with_a_sharding_per_leaf():
    tx = optax.adam(1e-3)
    init_fn = make_init_fn(TinyAutoencoder(), tx, 64)
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    runtime = Runtime.create(_config()).with_state(abstract)
    tree = runtime.state_sharding
    assert isinstance(tree, TrainState)
    assert jax.tree.structure(tree) == jax.tree.structure(abstract)
    leaves = jax.tree.leaves(tree)
    assert len(leaves) == len(jax.tree.leaves(abstract)) > 10
    assert all(isinstance(s, NamedSharding) and s.spec == PartitionSpec() for s in leaves)
    # The fresh state lands where the tree says, leaf by leaf.
    state = init_state(TinyAutoencoder(), tx, 64, jax.random.key(0), tree)
    for leaf, sharding in zip(jax.tree.leaves(state), leaves, strict=True):
        assert leaf.sharding == sharding and len(leaf.sharding.device_set) == 8


def test_a_rule_places_trees_of_any_layout():
    """A save's own layout (plain dicts and lists, as orbax restores it) gets the same rule."""
    runtime = Runtime.create(_config())
    saved = {"params": {"w": jax.ShapeDtypeStruct((4, 3), np.float32)},
             "opt_state": [jax.ShapeDtypeStruct((), np.int32)]}
    placed = runtime.shardings_for(saved)
    assert jax.tree.structure(placed) == jax.tree.structure(saved)
    for sharding in jax.tree.leaves(placed):
        assert sharding == NamedSharding(runtime.mesh, PartitionSpec())  # replicated today
        assert sharding.is_fully_replicated and len(sharding.device_set) == 8
