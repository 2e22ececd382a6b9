"""Precision policies: layers compute in bfloat16 or float16 while weights, optimizer state,
outputs and losses stay float32; float16 scales the loss dynamically as Keras does."""

import dataclasses
import json
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_model import TinyAutoencoder

from fsjax.checkpoint.manager import Checkpoints
from fsjax.config import ExperimentConfig, LossConfig, ModelConfig, OptimizerConfig
from fsjax.models import get_model_module
from fsjax.nn.precision import Policy
from fsjax.optim.loss_scale import DynamicLossScale, LossScaleState
from fsjax.optim.optimizers import make_optimizer
from fsjax.training import sharding
from fsjax.training.runtime import Runtime
from fsjax.training.step import init_state, make_init_fn, make_train_step

HALF = {"bfloat16": "bf16", "float16": "f16"}
NO_MASK = LossConfig(penalized_mask_loss=False)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from fsjax.data.demo import write_demo_faces

    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=6)


def test_the_loss_scale_follows_keras():
    """2**15 to start; halved (and the count reset) by a non-finite step, never below 1;
    doubled by the 2000th finite step in a row, not the 1999th."""
    rule = DynamicLossScale()
    adjust = jax.jit(rule.adjust)
    state = adjust(rule.init(), jnp.array(False))
    assert (float(state.scale), int(state.good_steps)) == (2.0**14, 0)
    state = jax.lax.fori_loop(0, 1999, lambda _, s: rule.adjust(s, jnp.array(True)), state)
    assert (float(state.scale), int(state.good_steps)) == (2.0**14, 1999)
    state = adjust(state, jnp.array(True))
    assert (float(state.scale), int(state.good_steps)) == (2.0**15, 0)
    floor = adjust(LossScaleState(jnp.float32(1.0), jnp.int32(7)), jnp.array(False))
    assert (float(floor.scale), int(floor.good_steps)) == (1.0, 0)


def _batch(mesh, size, n=2, seed=0):
    faces = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)
    return sharding.to_global({s: {"input": faces, "target": faces[:, ::-1].copy()} for s in "ab"},
                              sharding.batch_sharded(mesh))


def _conv_dtypes(lowered_text):
    results = re.findall(r"stablehlo\.convolution.*?->\s*tensor<([^>]*)>", lowered_text)
    assert results, "no convolution in the step"
    return {r.rsplit("x", 1)[-1] for r in results}


@pytest.mark.parametrize("experiment, dtype", [
    ("phaze_a_tiny", "float16"), ("phaze_a_tiny", "bfloat16"),
    # Original takes the same code paths (the float16 loop test trains its structure)
    pytest.param("original", "bfloat16", marks=pytest.mark.slow),
    pytest.param("original", "float16", marks=pytest.mark.slow),
])
def test_each_policy_trains_with_half_precision_convolutions_and_float32_weights(
        experiment, dtype):
    from fsjax.config import load_experiment

    base = (ExperimentConfig() if experiment == "original"
            else load_experiment(f"experiments/{experiment}.py"))
    config = dataclasses.replace(base, model=dataclasses.replace(base.model, dtype=dtype),
                                 loss=NO_MASK)
    spec = get_model_module(config.model.name).build(config)
    tx = make_optimizer(config.optimizer)
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = init_state(spec.module, tx, spec.input_size, jax.random.key(0),
                       sharding.replicated(mesh))
    runtime = Runtime.on_mesh(mesh, state, Policy.named(dtype))
    assert (runtime.loss_scale is not None) == (dtype == "float16")
    step = make_train_step(spec.module, tx, config.loss, runtime, spec.input_size)
    batch, key = _batch(mesh, max((spec.input_size,) + spec.output_sizes)), jax.random.key(1)
    # Every convolution of the step, forward and backward, runs in the policy's dtype.
    assert _conv_dtypes(step.lower(state, batch, key).as_text()) == {HALF[dtype]}
    # The outputs the losses read are float32.
    outputs = spec.module.apply(state.variables(), *[jnp.zeros(
        (1, spec.input_size, spec.input_size, 3), jnp.float32)] * 2)
    assert {o.dtype for side in "ab" for o in outputs[side]["faces"]} == {jnp.dtype("float32")}
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch, key)
        losses.append(float(metrics["total"]))
    assert all(np.isfinite(losses)) and bool(metrics["finite"]), losses
    assert metrics["total"].dtype == jnp.float32
    floats = [leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert set(floats) == {jnp.dtype("float32")}
    if dtype == "float16":
        assert float(metrics["loss_scale"]) == 2.0**15 and float(metrics["skipped"]) == 0
    else:
        assert "loss_scale" not in metrics


def _tiny(dtype, optimizer=None, rule=None):
    """The tiny model's step on one device in `dtype`, its fresh state and a batch."""
    module = TinyAutoencoder(dtype=jnp.dtype(dtype))
    config = ExperimentConfig(loss=NO_MASK, optimizer=optimizer or OptimizerConfig())
    tx = make_optimizer(config.optimizer)
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = jax.jit(make_init_fn(module, tx, 64, (), rule),
                    out_shardings=sharding.replicated(mesh))(jax.random.key(0))
    runtime = Runtime.on_mesh(mesh, state, Policy.named(dtype))
    if rule is not None:
        runtime = dataclasses.replace(runtime, loss_scale=rule)
    return state, make_train_step(module, tx, config.loss, runtime), _batch(mesh, 64)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                    strict=True))


# Accumulation (its accumulator is part of what a skipped step must not change) and AutoClip
# (its threshold shows whether clipping saw unscaled gradients); the scale grows every 3 steps.
CLIPPED = OptimizerConfig(gradient_accumulation=2, gradient_clipping="autoclip")


@pytest.fixture(scope="module")
def tiny16():
    """The step and a host copy of the fresh state (each test's first step takes it: the step
    donates device arrays)."""
    state, step, batch = _tiny("float16", CLIPPED, DynamicLossScale(growth_steps=3))
    host, placed = jax.device_get(state), jax.tree.map(lambda a: a.sharding, state)
    return (lambda tree=host: jax.device_put(tree, placed)), step, batch


def test_an_overflowing_gradient_skips_the_step_whole_and_halves_the_scale(tiny16):
    fresh, step, batch = tiny16
    state = fresh()
    key = jax.random.key(1)
    state, _ = step(state, batch, key)  # a normal first micro-step
    # A scale float32 holds but float16's backward pass cannot: the gradients overflow.
    before = jax.device_get(state)
    before = before.replace(loss_scale=LossScaleState(np.float32(2.0**100), np.int32(2)))
    state = fresh(before)
    state, metrics = step(state, batch, key)
    assert float(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["grad_norm"]))
    # The loss itself is finite: NaN protection has nothing to stop.
    assert bool(metrics["finite"]) and np.isfinite(float(metrics["total"]))
    assert float(metrics["loss_scale"]) == 2.0**99 and int(state.loss_scale.good_steps) == 0
    assert int(state.step) == 2  # the iteration counts, as in Faceswap
    assert _same(before.params, state.params) and _same(before.opt_state, state.opt_state)
    assert _same(before.model_state, state.model_state)
    # A loss that is itself not finite is judged by NaN protection.
    nan = before.replace(params=jax.tree.map(lambda p: np.full_like(p, np.nan), before.params))
    _, metrics = step(fresh(nan), batch, key)
    assert not bool(metrics["finite"])


def test_the_scale_doubles_after_the_configured_number_of_finite_steps(tiny16):
    fresh, step, batch = tiny16
    state = fresh()
    key = jax.random.key(1)
    scales = []
    for _ in range(4):
        state, metrics = step(state, batch, key)
        scales.append(float(metrics["loss_scale"]))
        assert float(metrics["skipped"]) == 0
    assert scales == [2.0**15, 2.0**15, 2.0**16, 2.0**16]
    assert int(state.loss_scale.good_steps) == 1


def test_gradients_are_unscaled_before_clipping_and_the_metrics(tiny16):
    """AutoClip's threshold and the gradient norm are the same in float16 as in float32
    (scaled, they would be 2**15 times larger)."""
    figures = {}
    fresh, step16, batch16 = tiny16
    for dtype, (state, step, batch) in (("float32", _tiny("float32", CLIPPED)),
                                        ("float16", (fresh(), step16, batch16))):
        for _ in range(2):  # the second micro-step runs AutoClip
            state, metrics = step(state, batch, jax.random.key(1))
        figures[dtype] = (float(metrics["grad_norm"]), float(metrics["clip_threshold"]))
    assert figures["float32"][1] > 0
    np.testing.assert_allclose(figures["float16"], figures["float32"], rtol=0.02)


def _scalars(folder):
    """{tag: [(step, value)]} from the TensorBoard event files under `folder` (TFRecord frames
    of tensorboardX's Event protos)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_float16_loop_saves_and_resumes_the_scale_and_records_mixed_precision(
        tmp_path, faces, tiny_loop, capsys):
    from tiny_model import loop_config

    from fsjax.training.loop import train_and_evaluate

    def run(iterations, dtype):
        config = loop_config(tmp_path / "m", faces, iterations=iterations, save_interval=1,
                             no_logs=False)
        config = dataclasses.replace(config, loss=NO_MASK, model=ModelConfig(
            dtype=dtype, loss_scale_growth_steps=2))
        return train_and_evaluate(config)

    def saved_scale():
        checkpoints = Checkpoints(tmp_path / "m", "original", writable=False)
        try:
            saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        finally:
            checkpoints.close()
        scale = saved["loss_scale"]
        return float(scale["scale"]), int(scale["good_steps"])

    run(3, "float16")  # 2**15 -> 2**16 after two finite steps, then one more
    printed = capsys.readouterr().out
    assert "Precision policy float16" in printed and "| loss scale 65536" in printed
    assert saved_scale() == (2.0**16, 1)
    state_file = json.loads((tmp_path / "m" / "original_state.json").read_text())
    assert state_file["config"]["mixed_precision"] is True
    assert state_file["config"]["dtype"] == "float16"

    state = run(5, "float16")  # continues the count: doubles at iteration 4
    assert (float(state.loss_scale.scale), int(state.loss_scale.good_steps)) == (2.0**17, 1)
    assert saved_scale() == (2.0**17, 1)
    scalars = _scalars(tmp_path / "m" / "original_logs")
    assert [v for _, v in sorted(scalars["batch_loss_scale"])] == [
        2.0**15, 2.0**16, 2.0**16, 2.0**17, 2.0**17]

    # The policy may change on resume, as Faceswap's mixed_precision may; back in float16 the
    # scale starts afresh.
    run(6, "bfloat16")
    printed = capsys.readouterr().out
    assert "model.dtype changed from float16 to bfloat16 (Faceswap's mixed_precision: " \
           "True -> False)" in printed
    assert json.loads((tmp_path / "m" / "original_state.json").read_text()
                      )["config"]["mixed_precision"] is False
    state = run(7, "float16")
    assert "model.dtype changed from bfloat16 to float16" in capsys.readouterr().out
    assert (float(state.loss_scale.scale), int(state.loss_scale.good_steps)) == (2.0**15, 1)


def test_summary_names_the_policy(capsys):
    from fsjax.train import main

    assert main(["--config", "experiments/phaze_a_tiny.py", "--summary",
                 "--config.model.dtype", "float16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("Precision policy: float16 (float16 compute, float32 parameters "
                               "and optimizer state") and lines[1].endswith("loss scaling)")


def test_a_model_folder_resume_may_change_only_the_policy(tmp_path):
    from fsjax.checkpoint import state_file
    from fsjax.config import ConfigError
    from fsjax.train import parse_cli

    folder = tmp_path / "m"
    folder.mkdir()
    config = dataclasses.replace(ExperimentConfig(), model=ModelConfig(dtype="float16"))
    state_file.write_state(state_file.state_path(folder, "original"),
                           state_file.new_state("original", config))
    assert parse_cli(["--config", str(folder)]).model.dtype == "float16"
    changed = parse_cli(["--config", str(folder), "--config.model.dtype", "bfloat16"])
    assert changed.model.dtype == "bfloat16" and changed.model.name == "original"
    with pytest.raises(ConfigError, match=r"locked .*\(model\.lowmem\); only model\.dtype"):
        parse_cli(["--config", str(folder), "--config.model.lowmem"])


def test_faceswaps_mixed_precision_is_read_as_float16(tmp_path):
    from fsjax.config import ConfigError
    from fsjax.config.faceswap_state import experiment_from_state

    source = tmp_path / "original_state.json"
    for options, want in (({"mixed_precision": True}, "float16"),
                          ({"mixed_precision": False}, "float32"), ({}, "float32"),
                          ({"mixed_precision": True, "dtype": "bfloat16"}, "bfloat16")):
        config = experiment_from_state({"config": options}, "original", source)
        assert config.model.dtype == want, options
    with pytest.raises(ConfigError, match=r"original_state.json: option 'mixed_precision' "
                                          r"holds \"yes\""):
        experiment_from_state({"config": {"mixed_precision": "yes"}}, "original", source)
