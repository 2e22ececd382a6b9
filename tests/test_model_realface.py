"""RealFace: Faceswap's names, shapes and counts, the derived layout, option checks, a training
pass. Full-size variants are checked through shapes only (jax.eval_shape)."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsjax.config import ConfigError, ExperimentConfig, LossConfig, ModelConfig, RealfaceConfig
from fsjax.models import realface
from fsjax.training.summary import count, param_tree

# A tiny model runs in well under a second on CPU; XLA's optimising compile is what takes time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _config(learn_mask=False, opts=None, **options):
    opts = opts or RealfaceConfig(**options)
    return ExperimentConfig(model=ModelConfig(name="realface", realface=opts),
                            loss=LossConfig(learn_mask=learn_mask))


def _unchecked(**options):
    """Options below Faceswap's ranges (tiny widths for a quick CPU pass), not validated."""
    opts = copy.copy(RealfaceConfig())
    for key, value in options.items():
        object.__setattr__(opts, key, value)
    return opts


def _out_shapes(spec, method=None, **kwargs):
    x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
    variables = jax.eval_shape(spec.module.init, jax.random.key(0), x, x)
    if method == "swap":
        out = jax.eval_shape(lambda v, f: spec.module.apply(v, f, method="swap", **kwargs),
                             variables, x)
    else:
        out = jax.eval_shape(spec.module.apply, variables, x, x)
    return jax.tree.map(lambda s: s.shape, out)


def test_parameters_match_faceswap_manifest(check_manifest):
    config = _config()
    assert check_manifest("realface", config) == 238_241_676
    tree = param_tree(realface.build(config).module, 64)
    assert {sub: count(layers) for sub, layers in tree.items()} == {
        "encoder": 29_604_608, "decoder_a": 64_196_041, "decoder_b": 144_441_027}


@pytest.mark.parametrize("input_size, output_size, expected", [
    (64, 128, (4, 5, 1024)),   # Faceswap's defaults
    (64, 64, (4, 4, 1024)),
    (80, 64, (4, 4, 1024)),    # 64 is nearer to 80 than 32
    (64, 96, (3, 5, 1088)),    # 48 is nearer to 64 than 96
    (96, 128, (8, 4, 768)),    # 128 and 64 tie: the 4-upscale layout wins
    (128, 128, (8, 4, 768)),
    (112, 160, (5, 5, 960)),   # 160 / 16 = 10 is not under 10
    (128, 256, (8, 5, 768)),
    (64, 256, (8, 5, 768)),    # only one layout
])
def test_dense_layout_follows_faceswap(input_size, output_size, expected):
    width, upscalers, filters = realface.dense_layout(input_size, output_size)
    assert (width, upscalers, filters) == expected
    assert width * 2 ** upscalers == output_size


def test_input_128_output_256_builds_the_derived_layout():
    spec = realface.build(_config(input_size=128, output_size=256))
    assert (spec.input_size, spec.output_sizes) == (128, (256,))
    tree = jax.tree.map(lambda s: s.shape, param_tree(spec.module, 128))
    enc, dec_a, dec_b = tree["encoder"], tree["decoder_a"], tree["decoder_b"]
    assert enc["conv_1024_0_conv2d"]["kernel"] == (5, 5, 512, 1024)
    # width 8, 5 upscales, 768 dense filters (A: int(768 / 1.5) = 512, complexity 341)
    assert dec_b["dense_2"]["kernel"] == (8 * 8 * 1024, 1536)
    assert dec_b["dense_3"]["kernel"] == (1536, 8 * 8 * 768)
    assert dec_b["upscale_768_0_conv2d_conv2d"]["kernel"] == (3, 3, 768, 4 * 768)
    assert dec_a["dense_1"]["kernel"] == (1024, 8 * 8 * 512)
    assert dec_a["upscale_512_0_conv2d_conv2d"]["kernel"] == (3, 3, 512, 2048)
    # the counters run across sub-models: B's first 512 upscale comes after A's
    assert {k for k in dec_b if k.startswith("upscale_")} == {
        "upscale_768_0_conv2d_conv2d", "upscale_512_1_conv2d_conv2d",
        "upscale_256_0_conv2d_conv2d", "upscale_128_0_conv2d_conv2d",
        "upscale_64_0_conv2d_conv2d"}
    assert {k for k in dec_a if k.startswith("upscale_")} == {
        f"upscale_{f}_0_conv2d_conv2d" for f in (512, 341, 170, 85, 42)}
    assert sum(k.startswith("residual_") for k in dec_b) == 2 * (1 + 2 * 3)  # 2 convs each
    out = _out_shapes(spec)
    assert out["a"]["faces"] == ((1, 256, 256, 3),) and out["b"]["faces"] == ((1, 256, 256, 3),)


def test_input_64_output_64_builds_four_upscales():
    spec = realface.build(_config(output_size=64))
    tree = jax.tree.map(lambda s: s.shape, param_tree(spec.module, 64))
    dec_b = tree["decoder_b"]
    assert dec_b["dense_3"]["kernel"] == (1536, 4 * 4 * 1024)
    assert {k for k in dec_b if k.startswith("upscale_")} == {
        f"upscale_{f}_0_conv2d_conv2d" for f in (1024, 512, 256, 128)}
    assert dec_b["face_out_b_0_conv2d"]["kernel"] == (5, 5, 128, 3)
    assert tree["decoder_a"]["face_out_a_0_conv2d"]["kernel"] == (5, 5, 85, 3)
    out = _out_shapes(spec)
    assert out["a"]["faces"] == ((1, 64, 64, 3),) and out["b"]["faces"] == ((1, 64, 64, 3),)


def test_learn_mask_adds_a_mask_branch_per_side():
    spec = realface.build(_config(learn_mask=True))
    assert spec.learn_mask
    out = _out_shapes(spec)
    for side in "ab":
        assert out[side]["faces"] == ((1, 128, 128, 3),)
        assert out[side]["mask"] == (1, 128, 128, 1)
    tree = jax.tree.map(lambda s: s.shape, param_tree(spec.module, 64))
    # the mask starts from the dense stage's upscale (682 filters on A, 1024 on B) at 384 filters
    assert tree["decoder_a"]["upscale_384_0_conv2d_conv2d"]["kernel"] == (3, 3, 682, 1536)
    assert tree["decoder_b"]["upscale_384_1_conv2d_conv2d"]["kernel"] == (3, 3, 1024, 1536)
    for side, idx in (("a", 0), ("b", 1)):
        names = {k for k in tree[f"decoder_{side}"] if k.startswith("upscale_") and
                 int(k.split("_")[1]) in (384, 192, 96, 48)}
        assert names == {f"upscale_{f}_{idx}_conv2d_conv2d" for f in (384, 192, 96, 48)}
        assert tree[f"decoder_{side}"][f"mask_out_{side}_0_conv2d"]["kernel"] == (5, 5, 48, 1)


def test_swap_decodes_through_side_b():
    spec = realface.build(_config())
    assert _out_shapes(spec, method="swap", to_side="b") == {"faces": ((1, 128, 128, 3),)}


@pytest.mark.parametrize("options, message", [
    (dict(input_size=72), r"input_size=72 must be a multiple of 16 \(64..128\)"),
    (dict(input_size=144), r"input_size=144 is out of range: allowed 64..128"),
    (dict(output_size=112), r"output_size=112 must be a multiple of 32 \(64..256\)"),
    (dict(output_size=288), r"output_size=288 is out of range: allowed 64..256"),
    (dict(dense_nodes=512), r"dense_nodes=512 is out of range: allowed 768..2048"),
    (dict(complexity_encoder=200), r"complexity_encoder=200 is out of range: allowed 96..160"),
    (dict(complexity_decoder=256), r"complexity_decoder=256 is out of range: allowed 512..544"),
])
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match="model.realface." + message):
        RealfaceConfig(**options)


def _train_pass(spec, size, compiler_options=FAST_COMPILE):
    """Init, loss and gradients in one compiled program (init's forward pass is dead code there,
    so XLA drops it)."""
    a, b = np.random.default_rng(1).random((2, 2, size, size, 3), dtype=np.float32)

    def loss(params):
        out = spec.module.apply({"params": params}, a, b, rngs={"dropout": jax.random.key(2)})
        total = sum(jnp.mean((face - a) ** 2) for face in out["a"]["faces"])
        total += sum(jnp.mean((face - b) ** 2) for face in out["b"]["faces"])
        if spec.learn_mask:
            total += jnp.mean(out["a"]["mask"]) + jnp.mean(out["b"]["mask"])
        return total, out

    def run(key):
        variables = spec.module.init(key, a, b)
        (value, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return variables, value, out, grads

    variables, value, out, grads = jax.device_get(
        jax.jit(run, compiler_options=compiler_options)(jax.random.key(0)))
    assert np.isfinite(float(value))
    for sub, sub_grads in jax.device_get(grads).items():  # numpy: no per-shape compiles
        leaves = jax.tree.leaves(sub_grads)
        assert all(np.isfinite(g).all() for g in leaves), sub
        assert any(np.any(g != 0) for g in leaves), sub
    return variables, out


def test_forward_backward_tiny_widths(monkeypatch):
    """The model code at tiny widths (the real layout's dense filters are >= 768): widths are
    patched below Faceswap's ranges so one jitted pass stays quick on CPU."""
    monkeypatch.setattr(realface, "dense_layout", lambda i, o: (4, 4, 24))
    monkeypatch.setattr(realface, "MASK_FILTERS", 16)
    opts = _unchecked(output_size=64, dense_nodes=32, complexity_encoder=8,
                      complexity_decoder=32)
    spec = realface.build(_config(learn_mask=True, opts=opts))
    variables, out = _train_pass(spec, 64)
    for side in "ab":
        (face,) = out[side]["faces"]
        assert face.shape == (2, 64, 64, 3) and out[side]["mask"].shape == (2, 64, 64, 1)
        for values in (face, out[side]["mask"]):
            assert float(values.min()) >= 0 and float(values.max()) <= 1
    params = variables["params"]
    # the N(0, 0.02) initializer RealFace creates is never used: He-uniform convs, Glorot dense
    kernel = np.asarray(params["encoder"]["conv_16_0_conv2d"]["kernel"])
    assert np.abs(kernel).max() <= np.sqrt(6 / (5 * 5 * 8))
    assert np.abs(kernel).max() > 0.9 * np.sqrt(6 / (5 * 5 * 8))
    dense = np.asarray(params["decoder_b"]["dense_2"]["kernel"])
    assert np.abs(dense).max() <= np.sqrt(6 / sum(dense.shape))
    # decoder A is B scaled by 1 / 1.5: int(32 / 1.5) = 21 nodes, int(24 / 1.5) = 16 filters
    assert params["decoder_a"]["dense"]["kernel"].shape == (4 * 4 * 64, 21)
    # B's residual blocks: the dense stage's and each stage's first have no bias (names count
    # on from the encoder's residual_32_0/1)
    assert "bias" not in params["decoder_b"]["residual_24_0_conv2d_0"]
    assert "bias" not in params["decoder_b"]["residual_32_2_conv2d_0"]
    assert "bias" in params["decoder_b"]["residual_32_3_conv2d_0"]


@pytest.mark.slow
def test_forward_backward_smallest_real_variant():
    spec = realface.build(_config(output_size=64, dense_nodes=768, complexity_encoder=96))
    _, out = _train_pass(spec, 64, compiler_options={})
    assert out["a"]["faces"][0].shape == out["b"]["faces"][0].shape == (2, 64, 64, 3)
