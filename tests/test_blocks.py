"""Faceswap's blocks, layers and initializers: numerics against Keras and the formulas."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from fsjax.config import ExperimentConfig, ModelConfig
from fsjax.models.original import build
from fsjax.nn import blocks, initializers, normalization
from fsjax.nn.precision import Policy

RNG = np.random.default_rng(0)


class _Block(nn.Module):
    """Calls one block function inside a compact method, like a sub-model does."""

    fn: object
    kwargs: dict

    @nn.compact
    def __call__(self, x):
        return self.fn(x, **self.kwargs)


def _init_apply(fn, x, seed=0, **kwargs):
    module = _Block(fn, kwargs)
    variables = jax.jit(module.init)(jax.random.key(seed), x)  # one compile, not one per op
    return variables, jax.jit(module.apply)(variables, x)


def _set_keras(layer, x, *weights):
    layer.build(x.shape)
    layer.set_weights([np.asarray(w) for w in weights])
    return np.asarray(layer(x))


# --- initializers -------------------------------------------------------------------------------

def test_icnr_makes_every_sub_pixel_start_identical():
    x = jnp.asarray(RNG.normal(size=(2, 6, 6, 5)), jnp.float32)
    opts = initializers.BlockOptions(icnr_init=True)
    variables, y = _init_apply(blocks.upscale_block, x, filters=8, name="up", opts=opts,
                               activation=None)
    kernel = variables["params"]["up_conv2d_conv2d"]["kernel"]
    assert kernel.shape == (3, 3, 5, 32)
    quarter = np.asarray(kernel[..., :8])
    for k in range(1, 4):  # tiled, not interleaved: channel c + 8k == channel c
        np.testing.assert_array_equal(kernel[..., 8 * k:8 * (k + 1)], quarter)
    y = np.asarray(y).reshape(2, 6, 2, 6, 2, 8)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(y[:, :, i, :, j], y[:, :, 0, :, 0], atol=1e-6)
    # Without the switch the sub-pixels differ, and ICNR only applies to upscale convs.
    variables, y = _init_apply(blocks.upscale_block, x, filters=8, name="up", activation=None)
    assert not np.allclose(variables["params"]["up_conv2d_conv2d"]["kernel"][..., 8:16],
                           variables["params"]["up_conv2d_conv2d"]["kernel"][..., :8])
    variables, _ = _init_apply(blocks.conv2d_block, x, filters=32, name="c", opts=opts)
    assert not np.allclose(variables["params"]["c_conv2d"]["kernel"][..., 8:16],
                           variables["params"]["c_conv2d"]["kernel"][..., :8])


@pytest.mark.parametrize("shape", [(3, 3, 64, 32), (5, 5, 3, 16), (5, 5, 128, 8), (1, 1, 4, 6)])
def test_convolution_aware_has_variance_2_over_fan_in(shape):
    init = initializers.convolution_aware()
    kernel = np.asarray(init(jax.random.key(0), shape), np.float64)
    fan_in = shape[0] * shape[1] * shape[2]
    np.testing.assert_allclose(kernel.var(), 2.0 / fan_in, rtol=1e-4)
    assert kernel.shape == shape
    other = np.asarray(init(jax.random.key(1), shape))
    assert not np.allclose(kernel, other)
    if shape[0] > 1:  # the filters of one output come from orthonormal Fourier bases
        flat = kernel.transpose(3, 2, 0, 1).reshape(shape[3], shape[2], -1)
        assert np.abs(np.corrcoef(flat[0])[np.triu_indices(min(shape[2], 4), 1)]).max() < 0.9


class _Switches(nn.Module):
    opts: initializers.BlockOptions

    @nn.compact
    def __call__(self, x):
        kw = dict(opts=self.opts)
        x = blocks.conv2d_block(x, 16, name="conv", **kw)
        x = blocks.residual_block(x, 16, name="res", **kw)
        x = blocks.upscale_block(x, 16, name="up", **kw)
        return blocks.dense(x.reshape(1, -1), 64, name="dense", **kw)


def test_build_switches_change_initializers_where_faceswap_applies_them():
    """conv_aware replaces every conv wrapper's init (ICNR on upscales), but not Dense layers;
    the model config's switches reach every sub-model."""
    spec = build(ExperimentConfig(model=ModelConfig(conv_aware_init=True, icnr_init=True)))
    for sub in (spec.module.encoder, spec.module.decoder_a, spec.module.decoder_b):
        assert sub.opts == initializers.BlockOptions(icnr_init=True, conv_aware_init=True)
    opts = initializers.BlockOptions(icnr_init=True, conv_aware_init=True)
    x = jnp.asarray(RNG.normal(size=(1, 16, 16, 8)), jnp.float32)
    params = _Switches(opts).init(jax.random.key(0), x)["params"]
    for layer, fan_in in (("conv_conv2d", 5 * 5 * 8), ("res_conv2d_0", 9 * 16),
                          ("res_conv2d_1", 9 * 16)):
        kernel = np.asarray(params[layer]["kernel"], np.float64)
        np.testing.assert_allclose(kernel.var(), 2 / fan_in, rtol=1e-4)
    up = np.asarray(params["up_conv2d_conv2d"]["kernel"])
    np.testing.assert_array_equal(up[..., 16:32], up[..., :16])
    np.testing.assert_allclose(np.var(up.astype(np.float64)), 2 / (9 * 16), rtol=1e-4)
    dense = np.asarray(params["dense"]["kernel"])
    glorot = np.sqrt(6.0 / (dense.shape[0] + 64))
    assert dense.max() <= glorot and dense.std() > 0.9 * glorot / np.sqrt(3)


def test_precision_policy_reaches_every_layer_of_the_blocks():
    """`opts.policy` sets the blocks' compute dtype while parameters stay float32; the model
    config's `dtype` reaches every sub-model together with the switches."""
    bf16 = Policy.named("bfloat16")
    spec = build(ExperimentConfig(model=ModelConfig(dtype="bfloat16", reflect_padding=True)))
    for sub in (spec.module.encoder, spec.module.decoder_a, spec.module.decoder_b):
        assert sub.opts == initializers.BlockOptions(reflect_padding=True, policy=bf16)
    opts = initializers.BlockOptions(policy=bf16)
    x = jnp.asarray(RNG.normal(size=(1, 8, 8, 4)), jnp.bfloat16)  # as inside a bfloat16 model
    cases = [(blocks.conv2d_block, dict(filters=4, normalization="batch", activation="prelu")),
             (blocks.upscale2x_block, dict(filters=4, upscale_name="u")),
             (blocks.upscale_resize_images_block, dict(filters=4)),
             (blocks.residual_block, dict(filters=4)), (blocks.dense, dict(features=4)),
             (blocks.separable_conv2d_block, dict(filters=4)),
             (blocks.conv2d_output, dict(filters=3, kernel_size=5))]
    for fn, kwargs in cases:
        variables, y = _init_apply(fn, x, name="b", opts=opts, **kwargs)
        want = jnp.float32 if fn is blocks.conv2d_output else jnp.bfloat16  # sigmoid in float32
        assert y.dtype == want, fn.__name__
        assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_residual_second_conv_starts_small():
    x = jnp.asarray(RNG.normal(size=(1, 8, 8, 16)), jnp.float32)
    variables, _ = _init_apply(blocks.residual_block, x, filters=16, name="res")
    second = np.asarray(variables["params"]["res_conv2d_1"]["kernel"])
    assert np.abs(second).max() <= np.sqrt(0.6 / (9 * 16))
    first = np.abs(np.asarray(variables["params"]["res_conv2d_0"]["kernel"]))
    assert 2 * np.sqrt(0.6 / (9 * 16)) < first.max() <= np.sqrt(6 / (9 * 16))  # He uniform


# --- padding, convolutions, resampling against Keras ---------------------------------------------

@pytest.mark.parametrize("size, kernel_size, strides, expected", [
    (8, 5, 2, (1, 2)), (7, 5, 2, (2, 2)), (8, 3, 1, (1, 1)), (9, 4, 1, (1, 2)), (6, 1, 1, (0, 0)),
])
def test_reflection_padding_reproduces_same_sizes(size, kernel_size, strides, expected):
    x = jnp.asarray(RNG.normal(size=(1, size, size, 2)), jnp.float32)
    padded = blocks.reflection_pad(x, kernel_size, strides)
    ref = np.pad(np.asarray(x), ((0, 0), expected, expected, (0, 0)), mode="reflect")
    np.testing.assert_array_equal(padded, ref)
    out = -(-size // strides)
    assert (padded.shape[1] - kernel_size) // strides + 1 == out


def test_reflect_padding_switch_in_blocks():
    x = jnp.asarray(RNG.normal(size=(2, 8, 8, 3)), jnp.float32)
    opts = initializers.BlockOptions(reflect_padding=True)
    variables, y = _init_apply(blocks.conv2d_block, x, filters=4, name="c", opts=opts)
    kernel = variables["params"]["c_conv2d"]["kernel"]
    ref = jax.lax.conv_general_dilated(
        jnp.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)), mode="reflect"), kernel, (2, 2), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y, nn.leaky_relu(ref, 0.1), atol=1e-5)
    plain = _Block(blocks.conv2d_block, dict(filters=4, name="c")).apply(variables, x)
    assert y.shape == plain.shape == (2, 4, 4, 4)
    assert not np.allclose(y[:, 0], plain[:, 0])  # borders differ: reflection, not zeros
    variables, y = _init_apply(blocks.residual_block, x, filters=3, name="r", opts=opts)
    assert y.shape == x.shape


def test_conv2d_transpose_matches_keras_pixel_alignment():
    x = RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)
    layer = blocks.Conv2DTranspose(6, 3, 2)
    variables = layer.init(jax.random.key(0), x)
    kernel = variables["params"]["kernel"]
    bias = jnp.asarray(RNG.normal(size=(6,)), jnp.float32)
    assert kernel.shape == (3, 3, 6, 3)  # Keras layout (k, k, out, in)
    ref = _set_keras(keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same"), x,
                     kernel, bias)
    ours = layer.apply({"params": {"kernel": kernel, "bias": bias}}, x)
    assert ours.shape == (2, 10, 8, 6)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_upscale_resize_images_block_matches_keras():
    x = RNG.normal(size=(2, 4, 4, 8)).astype(np.float32)
    variables, y = _init_apply(blocks.upscale_resize_images_block, x, filters=5, name="ri")
    p = variables["params"]
    bias = RNG.normal(size=(5,)).astype(np.float32)
    inp = keras.Input((4, 4, 8))
    a = keras.layers.Conv2D(5, 3, padding="same")(
        keras.layers.Resizing(8, 8, interpolation="bilinear")(inp))
    b = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")(inp)
    out = keras.layers.LeakyReLU(0.2)(keras.layers.Add()([a, b]))
    model = keras.Model(inp, out)
    model.set_weights([np.asarray(p["ri_conv"]["kernel"]), bias,
                       np.asarray(p["ri_convtrans"]["kernel"]), bias * 2])
    p = {"ri_conv": {"kernel": p["ri_conv"]["kernel"], "bias": bias},
         "ri_convtrans": {"kernel": p["ri_convtrans"]["kernel"], "bias": bias * 2}}
    y = _Block(blocks.upscale_resize_images_block, dict(filters=5, name="ri")).apply(
        {"params": p}, x)
    np.testing.assert_allclose(y, model(x), atol=1e-5)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling2d_matches_keras(interpolation):
    x = RNG.normal(size=(1, 5, 3, 2)).astype(np.float32)
    ref = keras.layers.UpSampling2D(2, interpolation=interpolation)(x)
    np.testing.assert_allclose(blocks.upsampling2d(jnp.asarray(x), 2, interpolation), ref,
                               atol=1e-6)


@pytest.mark.parametrize("fast, filters, channels", [(False, 64, 64), (False, 33, 34),
                                                     (True, 16, 16)])
def test_upscale2x_block_shapes_and_branches(fast, filters, channels):
    x = jnp.asarray(RNG.normal(size=(1, 4, 4, 8)), jnp.float32)
    variables, y = _init_apply(blocks.upscale2x_block, x, filters=filters, name="u2",
                               upscale_name="up", fast=fast)
    assert y.shape == (1, 8, 8, channels)
    p = variables["params"]
    f = filters if fast else filters - int(filters * 0.5)
    assert p["up_conv2d_conv2d"]["kernel"].shape == (3, 3, 8, 4 * f)
    assert p["u2_conv2d"]["kernel"].shape == (3, 3, 8, f)
    conv = jax.lax.conv_general_dilated(x, p["u2_conv2d"]["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    resized = blocks.upsampling2d(conv + p["u2_conv2d"]["bias"], 2, "bilinear")
    shuffled = _Block(blocks.upscale_block, dict(filters=f, name="up")).apply(
        {"params": {"up_conv2d_conv2d": p["up_conv2d_conv2d"]}}, x)
    expected = resized + shuffled if fast else jnp.concatenate([shuffled, resized], -1)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_upscale_dny_block_layers():
    x = jnp.asarray(RNG.normal(size=(1, 4, 4, 8)), jnp.float32)
    variables, y = _init_apply(blocks.upscale_dny_block, x, filters=6, name="dny")
    assert set(variables["params"]) == {"dny_conv2d_1_conv2d", "dny_conv2d_2_conv2d"}
    assert y.shape == (1, 8, 8, 6)
    assert float(y.min()) < 0 and np.all(np.asarray(y)[np.asarray(y) < 0] > -10)


def test_activations_and_depthwise():
    x = jnp.asarray(RNG.normal(size=(1, 4, 4, 3)), jnp.float32)
    variables, y = _init_apply(blocks.conv2d_block, x, filters=5, name="c", strides=1,
                               activation="prelu")
    assert variables["params"]["c_prelu"]["alpha"].shape == (4, 4, 5)  # Keras: one per element
    np.testing.assert_array_equal(np.asarray(y) >= 0, True)  # alpha starts at 0
    _, y = _init_apply(blocks.conv2d_block, x, filters=5, name="c", activation="swish")
    assert y.shape == (1, 2, 2, 5)
    variables, y = _init_apply(blocks.conv2d_block, x, filters=5, name="c", strides=1,
                               use_depthwise=True)
    assert variables["params"]["c_dwconv2d"]["kernel"].shape == (5, 5, 3, 1)
    assert y.shape == (1, 4, 4, 3)


# --- normalization ------------------------------------------------------------------------------

def test_instance_normalization_faceswap_quirks():
    x = RNG.normal(2.0, 3.0, size=(2, 4, 4, 6)).astype(np.float32)
    layer = normalization.InstanceNormalization()
    variables = layer.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables["params"]) == {"gamma": (1,), "beta": (1,)}
    params = {"gamma": jnp.array([1.5]), "beta": jnp.array([-0.25])}
    y = layer.apply({"params": params}, x)
    mean = x.mean((1, 2, 3), keepdims=True)  # over H, W and C together
    std = x.std((1, 2, 3), keepdims=True)  # population std; eps added to it, not to the variance
    np.testing.assert_allclose(y, (x - mean) / (std + 1e-3) * 1.5 - 0.25, atol=1e-5)


def test_ada_instance_norm_per_channel():
    x = RNG.normal(size=(2, 4, 4, 3)).astype(np.float32)
    beta, gamma = RNG.normal(size=(2, 1, 1, 3)), RNG.normal(size=(2, 1, 1, 3))
    y = normalization.ada_instance_norm(jnp.asarray(x), jnp.asarray(beta), jnp.asarray(gamma))
    mean, std = x.mean((1, 2), keepdims=True), x.std((1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / (std + 1e-3) * gamma + beta, atol=1e-5)


def test_batch_normalization_matches_keras_in_both_modes():
    x = RNG.normal(1.0, 2.0, size=(4, 3, 3, 5)).astype(np.float32)
    gamma, beta = RNG.normal(size=5), RNG.normal(size=5)
    mean, var = RNG.normal(size=5), RNG.uniform(0.5, 2, size=5)
    ref_layer = keras.layers.BatchNormalization(axis=3)
    ref_layer.build(x.shape)
    ref_layer.set_weights([gamma, beta, mean, var])
    layer = normalization.BatchNormalization()
    variables = {"params": {"gamma": gamma, "beta": beta},
                 "batch_stats": {"moving_mean": mean, "moving_variance": var}}
    np.testing.assert_allclose(layer.apply(variables, x), ref_layer(x, training=False), atol=1e-5)
    y, updated = layer.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, ref_layer(x, training=True), atol=1e-4)
    np.testing.assert_allclose(updated["batch_stats"]["moving_mean"],
                               np.asarray(ref_layer.moving_mean), atol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["moving_variance"],
                               np.asarray(ref_layer.moving_variance), atol=1e-5)


def test_layer_group_and_rms_normalization_formulas():
    x = RNG.normal(size=(2, 3, 3, 64)).astype(np.float32)
    ln = normalization.LayerNormalization()
    np.testing.assert_allclose(ln.apply(ln.init(jax.random.key(0), x), x),
                               keras.layers.LayerNormalization(epsilon=1e-3)(x), atol=1e-5)
    gn = normalization.GroupNormalization()
    y = gn.apply(gn.init(jax.random.key(0), x), x)
    g = x.reshape(2, 3, 3, 32, 2)
    ref = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, ref.reshape(x.shape), atol=1e-5)
    rms = normalization.RMSNormalization()
    y = rms.apply(rms.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(y, x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-8), atol=1e-5)


# --- training-only layers -----------------------------------------------------------------------

def test_noise_and_dropout_only_with_a_dropout_stream():
    x = jnp.ones((4, 6, 6, 32))
    for layer in (blocks.GaussianNoise(1.0), blocks.Dropout(0.5), blocks.Dropout(0.5, True)):
        np.testing.assert_array_equal(layer.apply({}, x), x)  # inference: identity
    rngs = {"dropout": jax.random.key(3)}
    noisy = np.asarray(blocks.GaussianNoise(1.0).apply({}, x, rngs=rngs)) - 1
    assert abs(noisy.std() - 1.0) < 0.05 and abs(noisy.mean()) < 0.05
    dropped = np.asarray(blocks.Dropout(0.25).apply({}, x, rngs=rngs))
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.75)}
    spatial = np.asarray(blocks.Dropout(0.5, spatial=True).apply({}, x, rngs=rngs))
    per_channel = spatial.reshape(4, 36, 32)
    assert np.all(per_channel.min(1) == per_channel.max(1))  # whole channels kept or dropped
    assert 0 < (per_channel[:, 0] == 0).mean() < 1
