"""Phaze-A: Faceswap's names, shapes and counts, its filter maths, options, presets, training."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsjax.config import ConfigError, ExperimentConfig, LossConfig, ModelConfig, PhazeAConfig
from fsjax.models import phaze_a
from fsjax.models.phaze_a import build, get_curve, input_size, scale_dim
from fsjax.models.phaze_a_presets import PRESETS, preset_config
from fsjax.training.summary import count, merge_collections

MANIFEST = {  # manifest key: (Phaze-A options, Faceswap's parameter count)
    "phaze_a": (PhazeAConfig(), 123_766_211),
    "phaze_a_preset_original": (preset_config("original"), 82_062_470),
    "phaze_a_preset_dfaker": (preset_config("dfaker"), 113_330_822),
    "phaze_a_preset_dny256": (preset_config("dny256"), 29_885_750),
    # Keras' EfficientNetB0 nested in the encoder (its BatchNorm and Normalization statistics
    # counted, as Keras counts them), 112 px in.
    "phaze_a_efficientnet_b0": (PhazeAConfig(enc_architecture="efficientnet_b0", enc_scaling=50,
                                             enc_load_weights=False), 114_795_366),
}

# A small model with every part of the defaults (G-Block, split fc, residuals, noise): 32 px in,
# 64 px out, decoder filters [256, 112, 48, 16].
TINY = PhazeAConfig(output_size=64, enc_scaling=3, fs_original_depth=2, fs_original_min_filters=16,
                    bottleneck_size=128, fc_min_filters=128, fc_max_filters=128, fc_dimensions=2,
                    fc_gblock_depth=1, fc_gblock_min_nodes=128, fc_gblock_max_nodes=128,
                    dec_max_filters=256, dec_min_filters=16)


def _config(opts: PhazeAConfig = TINY, learn_mask: bool = False, **model) -> ExperimentConfig:
    return ExperimentConfig(model=ModelConfig(name="phaze_a", phaze_a=opts, **model),
                            loss=LossConfig(learn_mask=learn_mask))


def _shapes(config: ExperimentConfig):
    """(spec, param tree, output shapes) without allocating anything."""
    spec = build(config)
    x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, 3), jnp.float32)
    variables = jax.eval_shape(spec.module.init, jax.random.key(0), x, x)
    out = jax.eval_shape(spec.module.apply, variables, x, x)
    return spec, merge_collections(variables), out


def _assert_outputs(spec, out, learn_mask=False):
    size = spec.output_sizes[0]
    for side in "ab":
        assert [f.shape for f in out[side]["faces"]] == [(1, size, size, 3)]
        assert ("mask" in out[side]) == learn_mask
        if learn_mask:
            assert out[side]["mask"].shape == (1, size, size, 1)


@pytest.mark.parametrize("variant", sorted(MANIFEST))
def test_parameters_match_faceswap_manifest(variant, check_manifest):
    opts, expected = MANIFEST[variant]
    assert check_manifest(variant, _config(opts)) == expected


def test_filter_curve_follows_faceswap_formula():
    assert get_curve(512, 64, 4, -0.45) == [512, 256, 128, 64]  # the default decoder
    assert get_curve(512, 64, 5, 0.0) == [512, 400, 288, 176, 64]  # linear
    assert get_curve(512, 64, 3, 0.5) == [512, 400, 64]  # x=.5: (.5-.25)/(.5-.5+1) = .25
    assert get_curve(512, 64, 3, 2.0) == [512, 504, 64]  # slope clipped to .99: 509.76 -> 504
    assert get_curve(100, 20, 2, 0.0) == [96, 16]  # each point rounded down to a multiple of 8
    assert get_curve(16384, 1024, 1, -0.5) == [16384]  # one point: the start value
    assert get_curve(512, 16, 6, 0.5, "cap_max") == [512, 256, 128, 64, 32, 16]  # DNY presets
    assert get_curve(512, 64, 6, 0.5, "cap_max") == [512, 512, 512, 256, 128, 64]
    assert get_curve(512, 64, 6, -0.5, "cap_min") == [512, 256, 128, 64, 64, 64]
    assert get_curve(512, 64, 4, 0.33, "cap_min") == [512, 336, 224, 144]  # x0.67 each step
    assert get_curve(512, 64, 0, 0.5, "full") == []
    assert get_curve(512, 64, 0, 0.5, "cap_max") == [512]  # Faceswap's loop always keeps start


def test_sizes_follow_faceswap():
    assert [input_size(PhazeAConfig(enc_scaling=s)) for s in (0, 3, 7, 13, 25, 50, 100)] == [
        32, 32, 64, 128, 256, 512, 1024]
    assert [scale_dim(128, 8), scale_dim(176, 8), scale_dim(128, 3), scale_dim(96, 8)] == [
        8, 11, 2, 6]


def test_fc_filters_are_scaled_for_an_odd_output_size():
    """176 px: the 8x8 fc map cannot double to 176, so fc filters drop from 1024 to
    (64 * 1024 // (64 * 121)) * 121 = 968 and the decoder reshapes 8x8x968 to 11x11x512."""
    spec, params, out = _shapes(_config(PhazeAConfig(output_size=176)))
    assert params["fc_a"]["dense_1"]["kernel"].shape == (1024, 16 * 968)
    assert params["g_block_both"]["conv2d_968_0"]["kernel"].shape == (3, 3, 968, 968)
    assert params["decoder_both"]["upscale_512_0_conv2d_conv2d"]["kernel"].shape == (
        3, 3, 512, 2048)
    _assert_outputs(spec, out)


def _convs(chans: list[int]) -> int:
    """Weights of 5x5 convs through `chans` channels."""
    return sum(25 * i * o + o for i, o in itertools.pairwise(chans))


def _dense(i: int, o: int) -> int:
    return i * o + o


def _upscales(chans: list[int]) -> int:
    """Weights of sub-pixel UpscaleBlocks (3x3 conv to 4x the filters) through `chans`."""
    return sum(9 * i * 4 * o + 4 * o for i, o in itertools.pairwise(chans))


def test_presets_that_recreate_classic_models_have_their_counts():
    """Worked out by hand from Faceswap's formulas; they equal the classic models' totals."""
    # IAE: encoder convs only; three fc models of Dense 1024 + Dense 4*4*512; a shared decoder
    # on the concatenated 4x4x1024 with filters [512, 256, 128, 64].
    encoder = _convs([3, 128, 256, 512, 1024])
    fc = _dense(4 * 4 * 1024, 1024) + _dense(1024, 4 * 4 * 512)
    decoder = _upscales([1024, 512, 256, 128, 64]) + _dense(5 * 5 * 64, 3)
    assert count(_shapes(_config(preset_config("iae")))[1]) == encoder + 3 * fc + decoder
    assert encoder + 3 * fc + decoder == 117_816_003
    # Lightweight: 3 convs + Dense 512; fc Dense 4*4*512 + upscale 256; decoders [512, 256, 128].
    encoder = _convs([3, 128, 256, 512]) + _dense(8 * 8 * 512, 512)
    fc = _dense(512, 4 * 4 * 512) + _upscales([512, 256])
    decoder = _upscales([256, 512, 256, 128]) + _dense(5 * 5 * 128, 3)
    assert count(_shapes(_config(preset_config("lightweight")))[1]) == encoder + fc + 2 * decoder
    assert encoder + fc + 2 * decoder == 51_066_374


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_at_its_output_size(name):
    opts = preset_config(name.replace("_", "-"))
    spec, params, out = _shapes(_config(opts, learn_mask=True))
    assert spec.output_sizes == (opts.output_size,) and count(params) > 0
    _assert_outputs(spec, out, learn_mask=True)


OPTION_CASES = {
    "split_decoders": dict(split_decoders=True),
    "shared_full_split": dict(shared_fc="full"),
    "shared_half_split": dict(shared_fc="half"),
    "shared_full_combined": dict(shared_fc="full", split_fc=False),
    "shared_half_combined": dict(shared_fc="half", split_fc=False),
    "split_gblock": dict(split_gblock=True),
    "no_gblock": dict(enable_gblock=False),
    **{f"dec_{m}": dict(dec_upscale_method=m) for m in (
        "resize_images", "upscale_fast", "upscale_hybrid", "upscale_dny")},
    **{f"norm_{n}": dict(dec_norm=n, dec_min_filters=32) for n in (
        "batch", "group", "instance", "layer", "rms")},
    **{f"bottleneck_{t}_{where}": dict(bottleneck_type=t, bottleneck_in_encoder=where == "enc",
                                       bottleneck_norm=n)
       for t, n, where in (("dense", "layer", "fc"), ("average_pooling", "rms", "enc"),
                           ("max_pooling", "instance", "fc"), ("flatten", "none", "enc"))},
    **{f"fc_{u}_{n}": dict(fc_upsampler=u, fc_upsamples=n, fc_upsample_filters=128)
       for u, n in (("upsample2d", 0), ("upsample2d", 2), ("subpixel", 2), ("resize_images", 2),
                    ("upscale_fast", 2), ("upscale_hybrid", 2))},
    "fc_depth_3": dict(fc_depth=3, fc_min_filters=16),
    "upscales_in_fc": dict(dec_upscales_in_fc=2, dec_skip_last_residual=False),
    "all_upscales_in_fc": dict(dec_upscales_in_fc=6),
    "dny_encoder": dict(fs_original_use_alt=True, enc_scaling=7, fs_original_depth=3),
    "cap_max": dict(dec_slope_mode="cap_max", dec_filter_slope=0.5, dec_res_blocks=2),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_option_combinations_build_at_the_output_size(case):
    learn_mask = "upscales_in_fc" not in case  # Faceswap's mask path there: see the DNY test
    opts = dataclasses.replace(TINY, **OPTION_CASES[case])
    spec, params, out = _shapes(_config(opts, learn_mask=learn_mask))
    _assert_outputs(spec, out, learn_mask=learn_mask)
    subs = set(params)
    assert ("fc_shared" in subs) == ("shared_full" in case)
    assert ({"g_block_a", "g_block_b"} <= subs) == (case == "split_gblock")
    assert ({"decoder_a", "decoder_b"} <= subs) == (case == "split_decoders")
    assert ("fc_gblock" in subs) == (case != "no_gblock")


def test_learned_mask_through_upscales_in_the_fc_model():
    """DNY presets upscale in the fc model; with learn_mask it hands (face, mask) on."""
    spec, params, out = _shapes(_config(preset_config("dny256"), learn_mask=True))
    _assert_outputs(spec, out, learn_mask=True)
    fc = params["fc_both"]
    assert {"conv_512_2_conv2d", "upscale_dny_512_1_conv2d_1_conv2d"} <= set(fc)  # mask branch
    assert {"mask_out_0_conv2d", "face_out_0_conv2d"} <= set(params["decoder_a"])


def test_reflect_padding_keeps_the_dny_encoder_last_conv_size():
    """Faceswap's reflect padding overrides the 4x4 conv's 'valid': 4x4 stays 4x4, so the
    bottleneck Dense sees 4*4*512 inputs instead of 512."""
    for reflect, fan_in in ((False, 512), (True, 4 * 4 * 512)):
        spec, params, out = _shapes(_config(preset_config("dny256"), reflect_padding=reflect))
        assert params["encoder"]["dense"]["kernel"].shape == (fan_in, 512)
        _assert_outputs(spec, out)


@pytest.mark.parametrize("options, match", [
    (dict(output_size=100), "output_size=100 must be a multiple of 16"),
    (dict(output_size=48), "output_size=48 is out of range"),
    (dict(mobilenet_width=2.5), "mobilenet_width=2.5 is out of range"),
    (dict(enc_architecture="resnet18"), "enc_architecture='resnet18' is not allowed"),
    (dict(dec_norm="spectral"), "dec_norm='spectral' is not allowed"),
    (dict(fc_upsampler="upscale_dny"), "fc_upsampler='upscale_dny' is not allowed"),
    (dict(dec_upscales_in_fc=7), "dec_upscales_in_fc=7 is out of range"),
    (dict(fc_dropout=1.0), "fc_dropout=1.0 is out of range"),
    (dict(dec_filter_slope=-1.0), "dec_filter_slope=-1.0 is out of range"),
    (dict(fs_original_depth=1), "fs_original_depth=1 is out of range"),
])
def test_bad_options_raise_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        PhazeAConfig(**options)


@pytest.mark.parametrize("options, learn_mask, match", [
    (dict(fc_min_filters=512), False, "fc_depth=1 the one Dense uses fc_min_filters"),
    (dict(dec_upscales_in_fc=1), True, "learn_mask with dec_upscales_in_fc"),
    (dict(dec_norm="group"), False, "dec_norm='group' needs .* got 112 filters"),
    (dict(fs_original_use_alt=True, fs_original_depth=5), False, "too deep for the 32 px"),
    (dict(fc_upsamples=4, fc_dimensions=16), False, "scale down to nothing"),
    (dict(fc_dimensions=16, fc_upsampler="subpixel", fc_upsamples=3, fc_upsample_filters=128,
          dec_slope_mode="cap_max"), False, "cannot turn into output_size=64"),
])
def test_combinations_faceswap_cannot_build_raise_config_errors(options, learn_mask, match):
    with pytest.raises(ConfigError, match=match):
        build(_config(dataclasses.replace(TINY, **options), learn_mask=learn_mask))


def test_unknown_presets_raise_config_errors():
    with pytest.raises(ConfigError, match="does not exist"):
        preset_config("villain")
    assert preset_config("dfl-h128", output_size=256).output_size == 256


@pytest.fixture(scope="module")
def tiny():
    """A tiny model with BatchNorm and a learned mask, initialised: 32 px in, 8x8 after the fc
    models, decoder filters [256, 80, 16] (decoder noise off: each noise layer costs compile
    time; the G-Block's noise stays)."""
    opts = dataclasses.replace(TINY, fc_dimensions=4, dec_norm="batch", dec_gaussian=False)
    spec = build(_config(opts, learn_mask=True))
    assert (spec.input_size, spec.output_sizes) == (32, (64,))
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
    return spec, jax.jit(spec.module.init)(jax.random.key(0), x, x), x


def test_forward_backward_on_a_tiny_batch(tiny):
    spec, variables, x = tiny
    params, state = variables["params"], {"batch_stats": variables["batch_stats"]}

    def loss_fn(params):
        out, new_state = spec.module.apply({"params": params, **state}, x, x[:, ::-1],
                                           rngs={"dropout": jax.random.key(2)},
                                           mutable=["batch_stats"])
        total = sum(jnp.mean((o["faces"][0] - 0.5) ** 2) + jnp.mean(o["mask"]) for o in
                    out.values())
        return total, (out, new_state)

    (loss, (out, new_state)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    _assert_outputs(spec, out, learn_mask=True)
    for side in "ab":
        for y in (out[side]["faces"][0], out[side]["mask"]):
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(loss)) and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    for sub in ("encoder", "fc_a", "fc_b", "fc_gblock", "g_block_both", "decoder_both"):
        assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads[sub])), sub
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_state["batch_stats"],
                         state["batch_stats"])
    assert all(jax.tree.leaves(moved))  # BatchNorm's moving statistics were updated


def test_swap_decodes_through_side_b_and_noise_needs_a_dropout_rng(tiny):
    spec, variables, x = tiny

    def run(variables, x, key):
        swap = lambda **kw: spec.module.apply(variables, x, to_side="b", method="swap", **kw)  # noqa: E731
        return spec.module.apply(variables, x, x), swap(), swap(rngs={"dropout": key})

    out, swap, noisy = jax.jit(run)(variables, x, jax.random.key(3))
    np.testing.assert_allclose(swap["faces"][0], out["b"]["faces"][0], atol=1e-6)
    assert swap["mask"].shape == (1, 64, 64, 1)
    assert float(jnp.abs(noisy["faces"][0] - swap["faces"][0]).max()) > 1e-4


def test_g_block_and_module_layout():
    """Sub-model order and Keras auto names of the default build (Faceswap creates fc_a, fc_b,
    then fc_gblock; the style Dense layers are He-normal)."""
    params = _shapes(_config(PhazeAConfig()))[1]
    assert sorted(params) == ["decoder_both", "encoder", "fc_a", "fc_b", "fc_gblock",
                              "g_block_both"]
    assert sorted(params["fc_gblock"]) == ["dense_3", "dense_4", "dense_5"]
    names = phaze_a.KerasNames()
    assert [names("dense"), names("conv2d"), names("dense")] == ["dense", "conv2d", "dense_1"]
    # A pooling bottleneck still creates (and names) its unused Dense: fc_a's is dense_1.
    pooled = _shapes(_config(dataclasses.replace(TINY, bottleneck_type="average_pooling")))[1]
    assert "encoder" in pooled and "dense" not in pooled["encoder"]
    assert sorted(pooled["fc_a"]) == ["dense_1"]
    spec = build(_config(TINY))
    g_block = spec.module.g_block_both
    x = jnp.ones((2, 4, 4, 128))
    style = jax.random.normal(jax.random.key(4), (2, 128))
    variables = jax.jit(g_block.init)(jax.random.key(5), x, style)
    kernel = variables["params"]["dense_4"]["kernel"]  # first style Dense: 128 -> 512
    std = np.sqrt(2 / 128)
    assert kernel.shape == (128, 512) and abs(float(kernel.std()) - std) < 0.1 * std
    assert float(jnp.abs(kernel).max()) <= 2 * std / 0.87962566103423978 + 1e-6  # truncated
    y = g_block.apply(variables, x, style)
    assert y.shape == x.shape and y.dtype == jnp.float32
