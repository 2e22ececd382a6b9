"""DLight: Faceswap's names, shapes and counts; training/inference behaviour; its options."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsjax.config import ConfigError, DlightConfig, ExperimentConfig, LossConfig, ModelConfig
from fsjax.models import dlight
from fsjax.nn import blocks
from fsjax.training.summary import count, param_tree

MANIFEST = {  # manifest key: (details, Faceswap's parameter count); features best, output 256
    "dlight_best_good_256": ("good", 143_614_006),
    "dlight_best_fast_256": ("fast", 163_706_006),
}


def _config(learn_mask=False, **options):
    return ExperimentConfig(model=ModelConfig(name="dlight", dlight=DlightConfig(**options)),
                            loss=LossConfig(learn_mask=learn_mask))


@pytest.mark.parametrize("variant", sorted(MANIFEST))
def test_parameters_match_faceswap_manifest(variant, check_manifest):
    details, total = MANIFEST[variant]
    assert check_manifest(variant, _config(features="best", details=details,
                                           output_size=256)) == total


def _faceswap_count(features, details, output_size, learn_mask):
    """Faceswap's parameter count worked out from dlight.py's layer list (Keras counting)."""
    def conv(k, cin, cout, bias=True):
        return k * k * cin * cout + (cout if bias else 0)

    def hybrid(cin, filters, scale=2):  # Upscale2xBlock(fast=False) -> (params, channels out)
        f = filters - filters // 2
        return conv(3, cin, f * scale * scale) + conv(3, cin, f), 2 * f

    def chain(cin, filters):
        total = 0
        for f in filters:
            n, cin = hybrid(cin, f)
            total += n
        return total, cin

    def mask(cin):
        n, c = chain(cin, (128, 64, 32, 16))
        return n + conv(5, c, 1) if learn_mask else 0

    ef = 48 if features == "lowmem" else 64
    dim = {"lowmem": 640, "fair": 1152, "best": 1664}[features]
    ratio = output_size // 64
    enc, c = 0, 3
    for m in (ef // 2, ef, ef * 2, ef * 4, ef * 8):
        enc, c = enc + conv(5, c, m), c + m
    enc += (16 * c + 1) * dim + (dim + 1) * 16384
    n, c = chain(1024, (256, 128, 64, 32))
    dec_a = n + conv(5, c, 3) + mask(1024)
    if details == "fast":
        dec_b = conv(3, 1024, 512 * ratio * ratio) + mask(512)
        for cin, f in ((512, 512), (512, 256), (256, 128), (128, 64)):
            dec_b += conv(3, cin, 4 * f) + conv(3, cin, f)
    else:
        dec_b = hybrid(1024, 512, ratio)[0] + mask(512)
        dec_b += sum(2 * conv(3, f, f, bias) for f, bias in (
            (512, True), (512, False), (512, False), (512, True), (512, False),
            (256, True), (128, False)))
        dec_b += hybrid(512, 512)[0] + hybrid(512, 256)[0] + hybrid(256, 128)[0]
        dec_b += hybrid(128, 64)[0] + 4 * (512 + 128)  # + two BatchNorms
    return enc + dec_a + dec_b + conv(5, 64, 3)  # + decoder B's face output


def test_analytic_count_reproduces_the_manifest():
    assert _faceswap_count("best", "good", 256, False) == 143_614_006
    assert _faceswap_count("best", "fast", 256, False) == 163_706_006


@pytest.mark.parametrize("features, details, output_size, learn_mask", [
    ("lowmem", "good", 128, False), ("fair", "fast", 384, True), ("best", "good", 384, True),
    ("lowmem", "fast", 128, False)])
def test_other_combinations_match_faceswap_count(features, details, output_size, learn_mask):
    spec = dlight.build(_config(learn_mask, features=features, details=details,
                                output_size=output_size))
    assert (spec.input_size, spec.output_sizes) == (128, (output_size,))
    assert count(param_tree(spec.module, 128)) == _faceswap_count(
        features, details, output_size, learn_mask)


def test_derived_sizes():
    for features, ef, dim in (("lowmem", 48, 640), ("fair", 64, 1152), ("best", 64, 1664)):
        cfg = DlightConfig(features=features)
        assert (dlight.encoder_filters(cfg), dlight.encoder_dim(cfg)) == (ef, dim)
    assert dlight.UPSCALE_RATIO == {128: 2, 256: 4, 384: 6}
    params = param_tree(dlight.build(_config()).module, 128)["encoder"]
    # conv filters + the pooled input they are concatenated with: 35, 99, 227, 483 channels in
    assert [params[f"conv_{f}_0_conv2d"]["kernel"].shape[2] for f in (32, 64, 128, 256, 512)] == [
        3, 35, 99, 227, 483]
    assert params["dense"]["kernel"].shape == (16 * 995, 1664)  # flatten of 4x4x995


def test_learn_mask_layer_names_follow_faceswap_counters():
    """Mask branches continue the per-base counters of the branches built before them."""
    for details, b_name, b_128 in (("good", "decoder_b", {2, 3}), ("fast", "decoder_b_fast", {2})):
        params = param_tree(dlight.build(_config(True, details=details)).module, 128)
        a, b = params["decoder_a"], params[b_name]
        assert {"upscale2x_128_hyb_0_conv2d", "upscale2x_128_hyb_1_conv2d",
                "upscale2x_16_hyb_0_conv2d", "upscale_8_0_conv2d_conv2d", "face_out_0_conv2d",
                "mask_out_0_conv2d"} <= set(a)
        assert a["mask_out_0_conv2d"]["kernel"].shape == (5, 5, 16, 1)
        assert {"face_out_1_conv2d", "upscale2x_16_hyb_1_conv2d", "upscale_8_1_conv2d_conv2d",
                "mask_out_1_conv2d"} <= set(b)
        # good: B's face branch has hybrid 128 (_2) before its mask (_3); fast B only the mask
        assert {int(k.split("_")[3]) for k in b if k.startswith("upscale2x_128_hyb")} == b_128


# Even at tiny widths the graph is large: the pass runs in well under a second, compiling it
# (unoptimised) takes ~15 s on CPU, so the default tests share one compiled program.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TINY = {"CODE_SHAPE": (4, 4, 32), "DEC_A_COMPLEXITY": 32, "DEC_B_COMPLEXITY": 32,
        "MASK_COMPLEXITY": 16, "encoder_filters": lambda cfg: 8, "encoder_dim": lambda cfg: 16}


def _tiny_spec(details):
    """DLight's code at widths far below Faceswap's fixed ones (lowmem, 128 px, learn_mask)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TINY.items():
            patch.setattr(dlight, name, value)
        return dlight.build(_config(True, features="lowmem", details=details, output_size=128))


def _passes(spec, compiler_options=None):
    """One compiled program, run twice with different dropout keys: `module.init`, a
    training-mode forward + backward pass on a batch of 2 (dropout rng, `batch_stats` mutable
    when there are any), and inference-mode outputs with both swap paths. Results as numpy.

    Init uses an rbg key only because XLA:CPU compiles this many threefry draws several times
    slower; init's own forward pass is dead code in the program and dropped."""
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.uniform(ka, (2, 128, 128, 3))
    b = jax.random.uniform(kb, (2, 128, 128, 3))

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def program(init_key, dropout_key):
        variables = spec.module.init(init_key, a[:1], b[:1])
        mutable = ["batch_stats"] if "batch_stats" in variables else False

        def loss_fn(params):
            result = spec.module.apply({**variables, "params": params}, a, b,
                                       rngs={"dropout": dropout_key}, mutable=mutable)
            out, new = result if mutable else (result, {})
            loss = sum(jnp.mean(jnp.abs(out[s]["faces"][0] - x)) + jnp.mean(out[s]["mask"])
                       for s, x in (("a", a), ("b", b)))
            return loss, (out, new)

        (loss, (out, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            variables["params"])
        infer = (spec.module.apply(variables, a, b),
                 spec.module.apply(variables, b, to_side="b", method="swap"),
                 spec.module.apply(variables, a, to_side="a", method="swap"))
        return dict(before=variables.get("batch_stats"), loss=loss, out=out,
                    new_stats=new_stats, grads=grads, infer=infer)

    init_key = jax.random.key(0, impl="unsafe_rbg")
    res = jax.device_get(program(init_key, jax.random.key(2)))
    again = jax.device_get(program(init_key, jax.random.key(3)))
    return {**res, "again": again}


def _check_training(res, b_name="decoder_b"):
    out, grads = res["out"], res["grads"]
    for side in "ab":
        (face,) = out[side]["faces"]
        assert face.shape == (2, 128, 128, 3) and face.dtype == np.float32
        assert out[side]["mask"].shape == (2, 128, 128, 1)
        for y in (face, out[side]["mask"]):
            assert y.min() >= 0 and y.max() <= 1
    assert math.isfinite(float(res["loss"]))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert set(grads) == {"encoder", "decoder_a", b_name}
    for sub in grads.values():  # every sub-model learns
        assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(sub))


def _check_batchnorm_and_inference(res, width):
    before = res["before"]["decoder_b"]
    after = res["new_stats"]["batch_stats"]["decoder_b"]
    assert set(after) == {"batch_normalization", "batch_normalization_1"}
    assert after["batch_normalization"]["moving_mean"].shape == (width,)
    assert after["batch_normalization_1"]["moving_variance"].shape == (width // 4,)
    for layer in after:
        for stat in ("moving_mean", "moving_variance"):
            assert not np.allclose(after[layer][stat], before[layer][stat])
    # inference ignores the dropout key; training mode depends on it (dropout) and on the batch
    for x, y in zip(jax.tree.leaves(res["infer"]), jax.tree.leaves(res["again"]["infer"]),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(res["out"]["b"]["faces"][0], res["again"]["out"]["b"]["faces"][0])
    assert not np.allclose(res["infer"][0]["b"]["faces"][0], res["out"]["b"]["faces"][0])


def _check_swap(res):
    both, to_b, to_a = res["infer"]
    for y in (to_b, to_a):
        assert y["faces"][0].shape == (2, 128, 128, 3) and y["mask"].shape == (2, 128, 128, 1)
    np.testing.assert_allclose(to_b["faces"][0], both["b"]["faces"][0], atol=1e-6)
    np.testing.assert_allclose(to_a["mask"], both["a"]["mask"], atol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    return _passes(_tiny_spec("good"), FAST_COMPILE)


def test_forward_backward_tiny_widths(tiny):
    _check_training(tiny)


def test_batchnorm_statistics_update_and_inference_is_deterministic(tiny):
    _check_batchnorm_and_inference(tiny, 32)


def test_swap_decodes_with_the_other_sides_decoder(tiny):
    _check_swap(tiny)


@pytest.mark.slow
def test_forward_backward_tiny_widths_fast_details():
    res = _passes(_tiny_spec("fast"), FAST_COMPILE)
    _check_training(res, "decoder_b_fast")
    assert res["before"] is None and res["new_stats"] == {}
    _check_swap(res)


@pytest.mark.slow
def test_smallest_real_variant_trains_and_runs_inference():
    """Faceswap's real widths: lowmem, details good, 128 px (76 M parameters)."""
    spec = dlight.build(_config(True, features="lowmem", details="good", output_size=128))
    res = _passes(spec)
    _check_training(res)
    _check_batchnorm_and_inference(res, 512)
    _check_swap(res)


def test_fast_details_swap_path_shape():
    """decoder_b_fast (no BatchNorm) through the swap path, shapes only."""
    spec = dlight.build(_config(True, features="lowmem", details="fast", output_size=384))
    x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    variables = jax.eval_shape(spec.module.init, jax.random.key(0), x, x)
    assert "batch_stats" not in variables
    y = jax.eval_shape(lambda v, f: spec.module.apply(v, f, to_side="b", method="swap"),
                       variables, x)
    assert y["faces"][0].shape == (1, 384, 384, 3) and y["mask"].shape == (1, 384, 384, 1)


@pytest.mark.parametrize("option, value, allowed", [
    ("features", "huge", "lowmem, fair, best"),
    ("details", "slow", "fast, good"),
    ("output_size", 192, "128, 256, 384"),
    ("output_size", 512, "128, 256, 384"),
])
def test_bad_options_raise_config_error(option, value, allowed):
    with pytest.raises(ConfigError, match=f"model.dlight.{option}={value!r} is not allowed: "
                                          f"choose one of {allowed}"):
        DlightConfig(**{option: value})


def test_defaults_are_faceswaps():
    assert DlightConfig() == DlightConfig(features="best", details="good", output_size=256)
    assert ModelConfig().dlight == DlightConfig()


def _bilinear_half_pixel(x, scale):
    """Reference for Keras' bilinear UpSampling2D (torch `interpolate`, align_corners=False):
    source coordinate (i + 0.5) / scale - 0.5, clamped at the edges."""
    def axis_weights(n):
        src = np.clip((np.arange(n * scale) + 0.5) / scale - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n - 1)
        hi, frac = np.minimum(lo + 1, n - 1), src - lo
        w = np.zeros((n * scale, n))
        np.add.at(w, (np.arange(n * scale), lo), 1 - frac)
        np.add.at(w, (np.arange(n * scale), hi), frac)
        return w

    wh, ww = axis_weights(x.shape[1]), axis_weights(x.shape[2])
    return np.einsum("ph,qw,nhwc->npqc", wh, ww, x)


@pytest.mark.parametrize("scale", [2, 4, 6])
def test_first_upsampling_matches_keras_bilinear_for_every_ratio(scale):
    """Decoder A's first layer (and the hybrid branch of B's first upscale) resizes 4x4 by the
    full ratio in one bilinear step."""
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(blocks.upsampling2d(jnp.asarray(x), scale, "bilinear"),
                               _bilinear_half_pixel(x, scale), atol=1e-5)


def test_pixel_shuffle_by_the_ratio_keeps_depth_to_space_order():
    r, oc = 4, 2
    x = jnp.arange(1 * 2 * 2 * r * r * oc, dtype=jnp.float32).reshape(1, 2, 2, r * r * oc)
    y = blocks.pixel_shuffle(x, r)
    for h, w, i, j, o in [(0, 0, 0, 0, 0), (1, 0, 3, 2, 1), (0, 1, 1, 3, 0), (1, 1, 2, 2, 1)]:
        assert y[0, h * r + i, w * r + j, o] == x[0, h, w, (i * r + j) * oc + o]
