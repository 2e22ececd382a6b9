"""The jitted train step: lowers the loss, same on 1 and 8 devices, compiles once, donates."""

import dataclasses
import gc

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_model import TinyAutoencoder

from fsjax.config import ExperimentConfig
from fsjax.data.faces import load_sample, scan_folder
from fsjax.models.original import build
from fsjax.nn import blocks
from fsjax.optim.optimizers import make_optimizer
from fsjax.training import sharding
from fsjax.training.inputs import sample_spec
from fsjax.training.runtime import Runtime
from fsjax.training.step import make_init_fn, make_train_step

BATCH = 8  # per side: divisible by the 8 virtual devices


@pytest.fixture(scope="module")
def setup(data_dir):
    config = ExperimentConfig()
    model = build(config)
    tx = make_optimizer(config.optimizer)
    spec = sample_spec(config, 64)
    batch = {}
    for side in ("a", "b"):
        metas = scan_folder(data_dir / "faces" / side.upper(), min_faces=1)
        samples = [load_sample(metas[i % len(metas)], spec) for i in range(BATCH)]
        faces = np.stack([s["image"] for s in samples])
        batch[side] = {"input": faces[:, :, ::-1].copy(), "target": faces}  # a crude "warp"
        for key in ("mask_face", "mask_eye", "mask_mouth"):
            batch[side][key] = np.stack([s[key] for s in samples])[..., None]
    init = jax.jit(make_init_fn(model.module, tx, model.input_size))
    host_state = jax.device_get(init(jax.random.key(0)))
    return config, model, tx, batch, host_state


def _run(setup, devices, steps, model=None, host_state=None):
    config, model32, tx, batch, state32 = setup
    model = model32 if model is None else model
    host_state = state32 if host_state is None else host_state
    mesh = sharding.make_mesh(devices)
    state = jax.device_put(host_state, sharding.replicated(mesh))
    step = make_train_step(model.module, tx, config.loss, Runtime.on_mesh(mesh, state))
    key = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    global_batch = sharding.to_global(batch, sharding.batch_sharded(mesh))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, global_batch, key)
        losses.append(float(metrics["total"]))
    return state, metrics, losses, step


@pytest.fixture(scope="module")
def one_device_run(setup):
    return _run(setup, jax.devices()[:1], 3)


def test_step_lowers_loss_and_compiles_once(one_device_run):
    state, metrics, losses, step = one_device_run
    assert losses[2] < losses[1] < losses[0]
    assert int(state.step) == 3
    assert step._cache_size() == 1
    expected = {"total", "loss_a", "loss_b", "grad_norm", "face_A", "face_B",
                "weighted_A/ssim", "weighted_A/mse", "unweighted_B/ssim", "unweighted_B/mse"}
    assert expected <= set(metrics)
    np.testing.assert_allclose(float(metrics["total"]),
                               float(metrics["loss_a"]) + float(metrics["loss_b"]), rtol=1e-6)


def test_one_and_eight_devices_give_the_same_step(setup, one_device_run):
    """The same loss on 1 and 8 devices (Original, float32) and the same parameters (float64).

    Parameters after two Adam steps are compared in float64. In float32 the two meshes round
    differently, and where a pre-activation lies within rounding of zero LeakyReLU's slope flips;
    Adam's first update (lr * sign(g)) likewise flips for gradients near zero. Neither says
    anything about the step, and in float64 such ties vanish. Eight float64 replicas of Original
    need ~20 GB on one host, so that part uses a small model made of the same blocks.
    """
    assert len(jax.devices()) == 8
    config, model, adam, batch, host_state = setup
    sgd = optax.sgd(1.0)  # the first loss does not depend on the optimizer; SGD has no state
    host_sgd = host_state.replace(opt_state=sgd.init(host_state.params))
    losses8 = _run((config, model, sgd, batch, host_sgd), jax.devices(), 1)[2]
    np.testing.assert_allclose(losses8[0], one_device_run[2][0], rtol=1e-6)
    gc.collect()  # eight float32 replicas are no longer needed

    with jax.enable_x64(True):
        module = TinyAutoencoder(dtype=jnp.float64, param_dtype=jnp.float64)
        tiny = dataclasses.replace(model, module=module)
        host64 = jax.device_get(jax.jit(make_init_fn(module, adam, 64))(jax.random.key(0)))
        one, m1, _, _ = _run(setup, jax.devices()[:1], 2, tiny, host64)
        eight, m8, _, _ = _run(setup, jax.devices(), 2, tiny, host64)
        assert one.params["encoder"]["dense"]["kernel"].dtype == jnp.float64
        np.testing.assert_allclose(float(m1["total"]), float(m8["total"]), rtol=1e-6)
        diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                             one.params, eight.params)
    assert max(jax.tree.leaves(diffs)) <= 1e-5


def test_state_is_donated(setup):
    config, model, tx, batch, host_state = setup
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = jax.device_put(host_state, sharding.replicated(mesh))
    step = make_train_step(model.module, tx, config.loss, Runtime.on_mesh(mesh, state))
    key = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
    old_kernel = state.params["encoder"]["dense"]["kernel"]
    step(state, sharding.to_global(batch, sharding.batch_sharded(mesh)), key)
    assert old_kernel.is_deleted()


def test_multi_scale_outputs_get_area_resized_targets():
    """Models with several outputs: each is compared with the target shrunk to its size."""
    from fsjax.config import LossConfig
    from fsjax.training.step import side_loss

    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (2, 64, 64, 3), np.uint8)
    small = target.astype(np.float32).reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4)) / 255
    outputs = {"faces": (jnp.asarray(small), jnp.asarray(target / 255, jnp.float32))}
    cfg = LossConfig(loss_function="mae", loss_function_2="none", penalized_mask_loss=False)
    total, terms = side_loss(outputs, {"target": target, "input": target}, cfg, "a")
    assert float(total) < 1e-6  # both outputs equal their (resized) targets
    assert {"face_A_0", "face_A_1"} <= set(terms)
    shifted = {"faces": (jnp.asarray(small) + 0.1, outputs["faces"][1])}
    _, terms = side_loss(shifted, {"target": target, "input": target}, cfg, "a")
    np.testing.assert_allclose(float(terms["face_A_0"]), 0.1, rtol=1e-5)
    assert float(terms["face_A_1"]) < 1e-6


class _HalfSizeInput(nn.Module):
    """Takes 32 px faces and returns 64 px ones, like DFaker's 64 -> 128."""

    @nn.compact
    def __call__(self, face_a, face_b):
        assert face_a.shape[1:3] == (32, 32), face_a.shape  # checked while tracing
        conv = blocks.Conv2D(3, 3, name="conv")
        up = lambda x: jax.image.resize(x, (x.shape[0], 64, 64, 3), "nearest")  # noqa: E731
        return {"a": {"faces": (jax.nn.sigmoid(conv(up(face_a))),)},
                "b": {"faces": (jax.nn.sigmoid(conv(up(face_b))),)}}


def _one_device(module, lr, input_size, face_size, step_input_size=None):
    """A fresh state of `module` on one device, its SGD step on MAE alone, and a uint8 batch of
    two random `face_size` faces (the same on both sides)."""
    from fsjax.config import LossConfig

    tx = optax.sgd(lr)
    cfg = LossConfig(loss_function="mae", loss_function_2="none", penalized_mask_loss=False)
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = jax.jit(make_init_fn(module, tx, input_size),
                    out_shardings=sharding.replicated(mesh))(jax.random.key(0))
    step = make_train_step(module, tx, cfg, Runtime.on_mesh(mesh, state),
                           input_size=step_input_size)
    faces = np.random.default_rng(0).integers(0, 256, (2, face_size, face_size, 3), np.uint8)
    batch = sharding.to_global({s: {"input": faces, "target": faces} for s in "ab"},
                               sharding.batch_sharded(mesh))
    return state, step, batch, faces


def test_input_is_area_resized_to_the_model_input_size():
    state, step, batch, _ = _one_device(_HalfSizeInput(), 0.1, 32, 64, step_input_size=32)
    state, metrics = step(state, batch, jax.random.key(1))
    assert np.isfinite(float(metrics["total"])) and int(state.step) == 1


class _Branch(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = blocks.conv2d_block(x, 4, name="conv", kernel_size=3, strides=1,
                                normalization="batch")
        x = blocks.Dropout(0.5)(x)
        return {"faces": (blocks.conv2d_output(x, 3, 3, name="out"),)}


class _NormDropout(nn.Module):
    """BatchNorm and dropout between two convs: the layers whose training mode differs."""

    def setup(self):
        self.branch = _Branch()

    def __call__(self, face_a, face_b):
        return {"a": self.branch(face_a), "b": self.branch(face_b)}


def test_train_step_updates_batch_stats_and_draws_dropout_per_step():
    from fsjax.training.step import make_predict_fn

    module = _NormDropout()  # lr 0: only batch_stats and the rng change
    state, step, batch, faces = _one_device(module, 0.0, 8, 8)
    stats0 = state.model_state["batch_stats"]["branch"]["conv_batchnorm"]
    np.testing.assert_array_equal(stats0["moving_mean"], 0.0)
    key = jax.random.key(1)
    state, m1 = step(state, batch, key)
    stats1 = jax.device_get(state.model_state["batch_stats"]["branch"]["conv_batchnorm"])
    assert np.all(stats1["moving_variance"] != 1.0) and np.any(stats1["moving_mean"] != 0.0)
    state, m2 = step(state, batch, key)
    assert float(m1["total"]) != float(m2["total"])  # same params, new dropout mask
    predict = make_predict_fn(module)
    out1 = predict(state.variables(), faces / 255.0, faces / 255.0)
    out2 = predict(state.variables(), faces / 255.0, faces / 255.0)
    np.testing.assert_array_equal(out1["a"]["faces"][0], out2["a"]["faces"][0])


def test_the_step_reports_whether_its_metrics_are_finite():
    """NaN protection reads this flag with the other metrics, so judging a step costs no sync."""
    state, step, batch, _ = _one_device(TinyAutoencoder(), 0.1, 64, 64)
    key = jax.random.key(1)
    state, metrics = step(state, batch, key)
    assert metrics["finite"].dtype == jnp.bool_ and bool(metrics["finite"])
    poisoned = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
    _, metrics = step(poisoned, batch, key)
    assert not bool(metrics["finite"]) and np.isnan(float(metrics["total"]))
