"""FSDP: the state sharded along an `fsdp` mesh axis trains exactly as the replicated one, in
1/K of the memory per device."""

import dataclasses

import jax
import numpy as np
import pytest
from tiny_model import TinyAutoencoder

from fsjax.config import ConfigError, ExperimentConfig, LossConfig, TrainConfig
from fsjax.config.scale import ShardingConfig
from fsjax.optim.optimizers import make_optimizer
from fsjax.training import sharding
from fsjax.training.runtime import Runtime
from fsjax.training.step import init_state, make_init_fn, make_train_step

MIN_SIZE = 1024  # the tiny model's arrays are small; real models keep the 2**16 default


def _bytes_per_device(tree):
    return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(tree))


def _train(fsdp, steps=3):
    config = ExperimentConfig(loss=LossConfig(penalized_mask_loss=False),
                              train=TrainConfig(batch_size=8),
                              sharding=ShardingConfig(fsdp=fsdp, fsdp_min_size=MIN_SIZE))
    module = TinyAutoencoder()
    tx = make_optimizer(config.optimizer)
    runtime = Runtime.create(config)
    abstract = jax.eval_shape(make_init_fn(module, tx, 64), jax.random.key(0))
    runtime = runtime.with_state(abstract)
    state = init_state(module, tx, 64, jax.random.key(0), runtime.state_sharding)
    step = make_train_step(module, tx, config.loss, runtime)
    faces = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), np.uint8)
    batch = runtime.to_global({s: {"input": faces, "target": faces[:, ::-1].copy()}
                               for s in "ab"})
    for _ in range(steps):
        state, metrics = step(state, batch, jax.random.key(1))
    assert np.isfinite(float(metrics["total"]))
    return runtime, state


@pytest.fixture(scope="module")
def runs():
    assert len(jax.devices()) == 8
    return {k: _train(k) for k in (1, 2, 8)}  # test_fsdp_on_four_devices: K = 4 (slow)


def test_fsdp_trains_the_same_parameters_as_data_parallel(runs):
    reference = jax.device_get(runs[1][1].params)
    for k in (2, 8):
        runtime, state = runs[k]
        assert dict(runtime.mesh.shape) == {"data": 8 // k, "fsdp": k}
        got = jax.device_get(state.params)
        diff = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(got), jax.tree.leaves(reference), strict=True))
        assert diff <= 1e-5, (k, diff)


def test_state_bytes_per_device_fall_as_one_over_k(runs):
    sizes = {k: _bytes_per_device((state.params, state.opt_state))
             for k, (_, state) in runs.items()}
    print("parameter+optimizer bytes per device:", sizes)
    for k, (_, state) in runs.items():
        leaves = jax.tree.leaves((state.params, state.opt_state))
        split = sum(a.nbytes for a in leaves if not a.sharding.is_fully_replicated)
        whole = sum(a.nbytes for a in leaves if a.sharding.is_fully_replicated)
        assert sizes[k] == split // k + whole  # the split part falls exactly as 1/K
        assert split + whole == sizes[1]
        assert k == 1 or whole <= 0.03 * sizes[1], (k, whole)  # biases, scalars: a few %
        assert sizes[1] / sizes[k] >= 0.85 * k, sizes
    # The big arrays are split along fsdp; the scalars and small arrays are whole.
    _, state = runs[8]
    kernel = state.params["encoder"]["dense"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 8, kernel.shape[1])
    assert state.step.sharding.is_fully_replicated


def test_the_rule_shards_the_largest_divisible_axis():
    spec = sharding.fsdp_spec
    assert spec((5, 5, 512, 1024), 8, 1024) == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    assert spec((1001, 24), 8, 1024) == jax.sharding.PartitionSpec(None, "fsdp")
    assert spec((999, 7), 8, 1024) == jax.sharding.PartitionSpec()  # nothing divides
    assert spec((64, 8), 8, 1024) == jax.sharding.PartitionSpec()  # too small to bother
    assert spec((4096,), 1, 1024) == jax.sharding.PartitionSpec()


def test_an_fsdp_size_that_does_not_divide_the_devices_is_refused():
    config = dataclasses.replace(ExperimentConfig(), sharding=ShardingConfig(fsdp=3))
    with pytest.raises(ConfigError, match="sharding.fsdp=3 must divide the 8 devices"):
        Runtime.create(config)


@pytest.mark.slow
def test_fsdp_on_four_devices(runs):
    _, state = _train(4)
    reference = jax.device_get(runs[1][1].params)
    diff = max(float(np.max(np.abs(a - b))) for a, b in
               zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(reference),
                   strict=True))
    assert diff <= 1e-5
    assert _bytes_per_device(state.params) < _bytes_per_device(runs[2][1].params)
