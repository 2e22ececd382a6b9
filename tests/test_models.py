"""Original model: Faceswap's parameter names, shapes and counts; the blocks' numerics."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsjax.config import DfakerConfig, DflSaeConfig, ExperimentConfig, LossConfig, ModelConfig
from fsjax.models import get_model_module
from fsjax.models.original import build
from fsjax.nn import blocks, conv

VARIANTS = {  # manifest key: (model config, loss config, Faceswap's parameter count)
    "original": (ModelConfig(), LossConfig(), 82_062_470),
    "original_lowmem": (ModelConfig(lowmem=True), LossConfig(), 60_565_126),
    "original_learn_mask": (ModelConfig(), LossConfig(learn_mask=True), 94_455_560),
    "lightweight": (ModelConfig(name="lightweight"), LossConfig(), 51_066_374),
    "dfl_h128": (ModelConfig(name="dfl_h128"), LossConfig(), 107_716_102),
    "dfl_h128_lowmem": (ModelConfig(name="dfl_h128", lowmem=True), LossConfig(), 48_244_102),
    "iae": (ModelConfig(name="iae"), LossConfig(), 117_816_003),
    "dfaker_128": (ModelConfig(name="dfaker"), LossConfig(), 113_330_822),
    "dfl_sae_df": (ModelConfig(name="dfl_sae"), LossConfig(), 130_008_718),
    "villain": (ModelConfig(name="villain"), LossConfig(), 155_115_014),
    "villain_lowmem": (ModelConfig(name="villain", lowmem=True), LossConfig(), 118_660_614),
    "dfl_sae_liae": (ModelConfig(name="dfl_sae", dfl_sae=DflSaeConfig(architecture="liae")),
                     LossConfig(), 121_746_593),
    "dfl_sae_df_multiscale": (
        ModelConfig(name="dfl_sae", dfl_sae=DflSaeConfig(multiscale_decoder=True)), LossConfig(),
        130_122_130),
    "dfaker_256": (ModelConfig(name="dfaker", dfaker=DfakerConfig(output_size=256)), LossConfig(),
                   258_046_598),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parameters_match_faceswap_manifest(variant, check_manifest):
    model_cfg, loss_cfg, expected_total = VARIANTS[variant]
    config = ExperimentConfig(model=model_cfg, loss=loss_cfg)
    assert check_manifest(variant, config) == expected_total


def test_pixel_shuffle_uses_tensorflow_depth_to_space_order():
    x = jnp.arange(2 * 3 * 3 * 8, dtype=jnp.float32).reshape(2, 3, 3, 8)
    y = blocks.pixel_shuffle(x, 2)
    oc = 2
    for h, w, i, j, o in [(0, 0, 0, 0, 0), (1, 2, 1, 0, 1), (2, 1, 1, 1, 0), (2, 2, 0, 1, 1)]:
        assert y[1, h * 2 + i, w * 2 + j, o] == x[1, h, w, (i * 2 + j) * oc + o]


@pytest.mark.parametrize("size, kernel_size, strides, padding", [
    (4, 5, 2, "SAME"), (8, 5, 2, "SAME"),  # space-to-depth + matrix product
    (4, 3, 1, "SAME"), (8, 3, 1, "SAME"), (32, 3, 1, "SAME"),  # matrix product over patches
    (10, 3, 1, "VALID"),  # the same after reflect padding
    (16, 5, 2, "SAME"), (12, 5, 1, "SAME"),  # XLA's convolution
])
def test_fast_conv_paths_equal_xla_convolution(size, kernel_size, strides, padding):
    # The fast paths are exact rewrites, so both sides run in float64: in float32 the kernel
    # gradient sums 2*size*size products in an order that differs by path and by CPU, which
    # would need a tolerance as large as the rounding it hides.
    with jax.enable_x64(True):
        kx, kk = jax.random.split(jax.random.key(1))
        x = jax.random.normal(kx, (2, size, size, 6), jnp.float64)
        kernel = jax.random.normal(kk, (kernel_size, kernel_size, 6, 7), jnp.float64)

        def fast(x, k):
            return conv._conv2d(x, k, strides, padding)

        def plain(x, k):
            return jax.lax.conv_general_dilated(x, k, (strides, strides), padding,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        out = fast(x, kernel)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, plain(x, kernel), atol=1e-12, rtol=1e-12)
        loss = lambda f: (lambda x, k: jnp.sum(jnp.sin(f(x, k))))  # noqa: E731
        gx, gk = jax.grad(loss(fast), argnums=(0, 1))(x, kernel)
        rx, rk = jax.grad(loss(plain), argnums=(0, 1))(x, kernel)
        np.testing.assert_allclose(gx, rx, atol=1e-11, rtol=1e-12)
        np.testing.assert_allclose(gk, rk, atol=1e-11, rtol=1e-12)


def test_conv2d_module_takes_fast_path_with_the_same_parameters():
    layer = blocks.Conv2D(16, 5, 2)
    x = jax.random.uniform(jax.random.key(2), (1, 8, 8, 4))
    params = layer.init(jax.random.key(3), x)
    assert jax.tree.map(jnp.shape, params)["params"] == {"kernel": (5, 5, 4, 16), "bias": (16,)}
    expected = jax.lax.conv_general_dilated(
        x, params["params"]["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layer.apply(params, x), expected, atol=1e-5)


def test_initializers_follow_faceswap():
    spec = build(ExperimentConfig())
    x = jnp.zeros((1, 64, 64, 3))
    params = jax.jit(spec.module.init)(jax.random.key(0), x, x)["params"]
    enc = params["encoder"]
    k = np.asarray(enc["conv_256_0_conv2d"]["kernel"])
    bound = np.sqrt(6.0 / (5 * 5 * 128))  # He uniform
    assert k.max() <= bound and k.min() >= -bound and k.std() > 0.9 * bound / np.sqrt(3)
    d = np.asarray(enc["dense"]["kernel"])
    glorot = np.sqrt(6.0 / (16384 + 1024))
    assert d.max() <= glorot and d.std() > 0.9 * glorot / np.sqrt(3)
    assert all(not np.any(b["bias"]) for b in enc.values())


def test_forward_shapes_and_compute_dtype():
    spec = build(ExperimentConfig(model=ModelConfig(dtype="bfloat16"),
                                  loss=LossConfig(learn_mask=True)))
    x = jnp.full((2, 64, 64, 3), 0.5)
    variables = jax.jit(spec.module.init)(jax.random.key(0), x, x)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out = jax.jit(spec.module.apply)(variables, x, x)
    for side in "ab":
        (face,) = out[side]["faces"]
        assert face.shape == (2, 64, 64, 3) and face.dtype == jnp.float32
        assert out[side]["mask"].shape == (2, 64, 64, 1)
        assert float(face.min()) >= 0 and float(face.max()) <= 1


@pytest.mark.parametrize("name, size, out", [("lightweight", 64, 64), ("iae", 64, 64),
                                             ("dfl_h128", 128, 128), ("dfaker", 64, 128)])
def test_other_models_train_both_sides_and_swap(name, size, out):
    """Outputs per side (face, learned mask) and the A->B swap path through side B's layers."""
    config = ExperimentConfig(model=ModelConfig(name=name), loss=LossConfig(learn_mask=True))
    spec = get_model_module(name).build(config)
    assert (spec.input_size, spec.output_sizes) == (size, (out,))
    x = jax.random.uniform(jax.random.key(1), (2, size, size, 3))
    variables = jax.jit(spec.module.init)(jax.random.key(0), x, x)
    y = jax.jit(spec.module.apply)(variables, x, x[::-1])
    assert y["a"]["faces"][0].shape == (2, out, out, 3)
    assert y["b"]["mask"].shape == (2, out, out, 1)
    swap = spec.module.apply(variables, x[::-1], to_side="b", method="swap")
    np.testing.assert_allclose(swap["faces"][0], y["b"]["faces"][0], atol=1e-6)


def test_separable_conv_equals_depthwise_then_pointwise():
    layer = blocks.SeparableConv2D(5, 3, 2)
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 4))
    params = layer.init(jax.random.key(5), x)["params"]
    got = layer.apply({"params": params}, x)
    dw, pw = np.asarray(params["depthwise_kernel"]), np.asarray(params["pointwise_kernel"])
    padded = np.pad(np.asarray(x), ((0, 0), (0, 1), (0, 1), (0, 0)))  # SAME, stride 2, k 3
    expected = np.zeros((2, 4, 4, 5), np.float32)
    for i in range(4):
        for j in range(4):
            patch = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]  # (n, 3, 3, c)
            depth = (patch * dw[..., 0]).sum(axis=(1, 2))  # per channel
            expected[:, i, j] = depth @ pw[0, 0] + np.asarray(params["bias"])
    np.testing.assert_allclose(got, expected, atol=1e-5)
