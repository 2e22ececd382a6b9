"""Unbalanced: Faceswap's names, shapes and counts, lowmem's overrides, option checks, a training
pass with SpatialDropout2D. Full-size variants are checked through shapes only (jax.eval_shape)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsjax.config import ConfigError, ExperimentConfig, LossConfig, ModelConfig, UnbalancedConfig
from fsjax.models import unbalanced
from fsjax.training.summary import count, param_tree

# A tiny model runs in well under a second on CPU; XLA's optimising compile is what takes time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _config(lowmem=False, learn_mask=False, opts=None, **options):
    opts = opts or UnbalancedConfig(**options)
    return ExperimentConfig(model=ModelConfig(name="unbalanced", lowmem=lowmem, unbalanced=opts),
                            loss=LossConfig(learn_mask=learn_mask))


def _unchecked(**options):
    """Options below Faceswap's ranges (tiny widths for a quick CPU pass), not validated."""
    opts = copy.copy(UnbalancedConfig())
    for key, value in options.items():
        object.__setattr__(opts, key, value)
    return opts


def _shapes(spec):
    return jax.tree.map(lambda s: s.shape, param_tree(spec.module, spec.input_size))


def _out_shapes(spec, method=None, **kwargs):
    x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
    variables = jax.eval_shape(spec.module.init, jax.random.key(0), x, x)
    if method == "swap":
        out = jax.eval_shape(lambda v, f: spec.module.apply(v, f, method="swap", **kwargs),
                             variables, x)
    else:
        out = jax.eval_shape(spec.module.apply, variables, x, x)
    return jax.tree.map(lambda s: s.shape, out)


@pytest.mark.parametrize("variant, lowmem, total, per_sub_model", [
    ("unbalanced", False, 207_046_186, (83_964_932, 43_633_827, 79_447_427)),
    ("unbalanced_lowmem", True, 107_962_506, (54_596_100, 28_937_523, 24_428_883)),
])
def test_parameters_match_faceswap_manifest(check_manifest, variant, lowmem, total,
                                            per_sub_model):
    config = _config(lowmem=lowmem)
    assert check_manifest(variant, config) == total
    tree = param_tree(unbalanced.build(config).module, 128)
    assert tuple(count(tree[sub]) for sub in ("encoder", "decoder_a", "decoder_b")) == \
        per_sub_model


def test_lowmem_overrides_nodes_and_complexities():
    """Faceswap's lowmem ignores the width options (input_size still applies)."""
    custom = UnbalancedConfig(nodes=2048, complexity_encoder=256, complexity_decoder_a=128,
                              complexity_decoder_b=1024)
    spec = unbalanced.build(_config(lowmem=True, opts=custom))
    assert count(param_tree(spec.module, 128)) == 107_962_506
    assert [stage[3] for stage in spec.module.decoder_a.stages] == [0.25, 0.15, 0.0, 0.0]
    assert [stage[3] for stage in unbalanced.build(_config()).module.decoder_a.stages] == [
        0.25, 0.25, 0.0, 0.0]


@pytest.mark.parametrize("size", [64, 256])
def test_input_size_sets_the_grid_and_the_output(size):
    spec = unbalanced.build(_config(input_size=size))
    assert (spec.input_size, spec.output_sizes) == (size, (size,))
    tree = _shapes(spec)
    grid = size // 16
    encoded = (size // 32) ** 2 * 1024  # five stride-2 convs
    assert tree["encoder"]["dense"]["kernel"] == (encoded, 1024)
    assert tree["encoder"]["dense_1"]["kernel"] == (1024, grid * grid * 512)
    out = _out_shapes(spec)
    assert out["a"]["faces"] == out["b"]["faces"] == ((1, size, size, 3),)


def test_custom_widths_follow_the_options():
    spec = unbalanced.build(_config(nodes=512, complexity_encoder=64, complexity_decoder_a=256,
                                    complexity_decoder_b=128))
    tree = _shapes(spec)
    assert {k for k in tree["encoder"] if k.endswith("_conv2d")} == {
        f"conv_{f}_0_conv2d" for f in (64, 128, 256, 384, 512)}
    assert tree["encoder"]["dense"]["kernel"] == (4 * 4 * 512, 512)
    assert {k for k in tree["decoder_a"] if k.startswith("upscale_")} == {
        "upscale_256_0_conv2d_conv2d", "upscale_256_1_conv2d_conv2d",
        "upscale_128_0_conv2d_conv2d", "upscale_64_0_conv2d_conv2d"}
    # B (128, 128, 64, 32) counts on after A's upscale_128_0 and upscale_64_0
    assert {k for k in tree["decoder_b"] if k.startswith("upscale_")} == {
        "upscale_128_1_conv2d_conv2d", "upscale_128_2_conv2d_conv2d",
        "upscale_64_1_conv2d_conv2d", "upscale_32_0_conv2d_conv2d"}


@pytest.mark.parametrize("lowmem", [False, True])
def test_learn_mask_adds_3x3_mask_branches(lowmem):
    spec = unbalanced.build(_config(lowmem=lowmem, learn_mask=True))
    out = _out_shapes(spec)
    for side in "ab":
        assert out[side]["faces"] == ((1, 128, 128, 3),)
        assert out[side]["mask"] == (1, 128, 128, 1)
    tree = _shapes(spec)
    ca, depth = (320, 384) if lowmem else (384, 512)
    # the mask branches start again from the grid, with 3x3 upscales named after the face's
    mask_a = [tree["decoder_a"][f"upscale_{f}_{i}_conv2d_conv2d"]["kernel"]
              for f, i in ((ca, 2), (ca, 3), (ca // 2, 1), (ca // 4, 1))]
    assert mask_a[0] == (3, 3, depth, 4 * ca) and mask_a[-1] == (3, 3, ca // 2, ca)
    mask_b = ("384_1", "192_1", "96_1", "48_1") if lowmem else ("512_2", "512_3", "256_1",
                                                                 "128_1")
    kernels = [tree["decoder_b"][f"upscale_{n}_conv2d_conv2d"]["kernel"] for n in mask_b]
    assert kernels[0] == (3, 3, depth, 4 * int(mask_b[0].split("_")[0]))
    assert all(k[:2] == (3, 3) for k in kernels)
    for side in "ab":
        assert tree[f"decoder_{side}"][f"mask_out_{side}_0_conv2d"]["kernel"][-1] == 1


def test_swap_decodes_through_side_b():
    spec = unbalanced.build(_config())
    assert _out_shapes(spec, method="swap", to_side="b") == {"faces": ((1, 128, 128, 3),)}


@pytest.mark.parametrize("options, message", [
    (dict(input_size=96), r"input_size=96 must be a multiple of 64 \(64..512\)"),
    (dict(input_size=576), r"input_size=576 is out of range: allowed 64..512"),
    (dict(input_size=32), r"input_size=32 is out of range: allowed 64..512"),
    (dict(nodes=256), r"nodes=256 is out of range: allowed 512..4096"),
    (dict(complexity_encoder=32), r"complexity_encoder=32 is out of range: allowed 64..1024"),
    (dict(complexity_decoder_a=2048), r"complexity_decoder_a=2048 is out of range"),
    (dict(complexity_decoder_b=0), r"complexity_decoder_b=0 is out of range: allowed 64..1024"),
])
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match="model.unbalanced." + message):
        UnbalancedConfig(**options)


def _train_pass(spec, size, compiler_options=FAST_COMPILE):
    """Init, loss and gradients (dropout on) and the outputs without a dropout key, in one
    compiled program (init's forward pass is dead code there, so XLA drops it)."""
    a, b = np.random.default_rng(1).random((2, 2, size, size, 3), dtype=np.float32)

    def loss(params, dropout_key):
        out = spec.module.apply({"params": params}, a, b, rngs={"dropout": dropout_key})
        total = jnp.mean((out["a"]["faces"][0] - a) ** 2)
        total += jnp.mean((out["b"]["faces"][0] - b) ** 2)
        if spec.learn_mask:
            total += jnp.mean(out["a"]["mask"]) + jnp.mean(out["b"]["mask"])
        return total, out

    def run(key):
        variables = spec.module.init(key, a, b)
        (value, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"],
                                                                     jax.random.key(2))
        return variables, value, out, grads, spec.module.apply(variables, a, b)

    variables, value, out, grads, plain = jax.device_get(
        jax.jit(run, compiler_options=compiler_options)(jax.random.key(0)))
    assert np.isfinite(float(value))
    for sub, sub_grads in jax.device_get(grads).items():  # numpy: no per-shape compiles
        leaves = jax.tree.leaves(sub_grads)
        assert all(np.isfinite(g).all() for g in leaves), sub
        assert any(np.any(g != 0) for g in leaves), sub
    return variables, out, plain


def test_forward_backward_tiny_widths():
    """The model code at tiny widths (patched below Faceswap's ranges) on 64 px faces."""
    opts = _unchecked(input_size=64, nodes=32, complexity_encoder=8, complexity_decoder_a=16,
                      complexity_decoder_b=24)
    spec = unbalanced.build(_config(opts=opts))
    variables, out, plain = _train_pass(spec, 64)
    for side in "ab":
        (face,) = out[side]["faces"]
        assert face.shape == (2, 64, 64, 3) and "mask" not in out[side]
        assert float(face.min()) >= 0 and float(face.max()) <= 1
    # SpatialDropout2D sits in decoder A only, and acts only when given a dropout key
    assert not np.allclose(out["a"]["faces"][0], plain["a"]["faces"][0])
    np.testing.assert_allclose(out["b"]["faces"][0], plain["b"]["faces"][0], atol=1e-6)

    params = variables["params"]
    enc, dec_b = params["encoder"], params["decoder_b"]
    # N(0, 0.02) where Faceswap passes it: encoder convs and Dense, face upscales (5x5), the
    # first conv of each residual block
    for kernel in (enc["conv_64_0_conv2d"]["kernel"], enc["dense"]["kernel"],
                   dec_b["upscale_24_0_conv2d_conv2d"]["kernel"],
                   dec_b["residual_24_0_conv2d_0"]["kernel"]):
        assert 0.016 < float(np.std(kernel)) < 0.024
    assert dec_b["upscale_24_0_conv2d_conv2d"]["kernel"].shape[:2] == (5, 5)
    # defaults elsewhere: residual's second conv VarianceScaling(0.2), the output He-uniform
    second = dec_b["residual_24_0_conv2d_1"]["kernel"]
    assert float(np.abs(second).max()) <= np.sqrt(0.6 / (3 * 3 * 24))
    bound = np.sqrt(6 / (5 * 5 * 6))
    assert bound * 0.8 < float(np.abs(dec_b["face_out_b_0_conv2d"]["kernel"]).max()) <= bound
    assert {k: float(v[0]) for k, v in enc["conv_8_0_instancenorm"].items()} == {
        "gamma": 1.0, "beta": 0.0}


@pytest.mark.slow
def test_forward_backward_smallest_real_variant():
    spec = unbalanced.build(_config(input_size=64, nodes=512, complexity_encoder=64,
                                    complexity_decoder_a=64, complexity_decoder_b=64))
    _, out, _ = _train_pass(spec, 64, compiler_options={})
    assert out["a"]["faces"][0].shape == out["b"]["faces"][0].shape == (2, 64, 64, 3)
