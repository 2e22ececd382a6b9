"""logcosh, smooth_loss, l_inf_norm, pixel_gradient_diff and laploss against Faceswap's numbers.

tests/data/losses_pixel.npz holds Faceswap's outputs for these five losses (from
shared/fixtures/losses.npz): `<loss>.<S>.per_sample` for S 64 and 128,
`<loss>.64.per_sample_masked`, `l_inf_norm.64.raw`, and for the two losses whose map layout is
non-trivial the 64 px raw NCHW map of the *first item only* (`<loss>.64.raw`, shape
(1, 3, 64, 64)), which keeps the file small. As in test_losses.py the inputs are redrawn from
`np.random.default_rng(0)`; `check.<key>` fingerprints guard the redraw.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_inputs import inputs, reference

import fsjax.losses as fl
from fsjax.config import LOSS_FUNCTIONS, LossConfig
from fsjax.losses import gradient, registry

TOL = 1e-5  # relative, single loss functions
NAMES = ("logcosh", "smooth_loss", "l_inf_norm", "pixel_gradient_diff", "laploss")
COMPAT = ("l_inf_norm", "pixel_gradient_diff")  # the two whose default differs from Faceswap
BETA = 1.0 / 255.0


@pytest.fixture(scope="module")
def ref(data_dir) -> dict[str, np.ndarray]:
    return reference(str(data_dir / "losses_pixel.npz"))


@pytest.fixture(scope="module")
def inp() -> dict[str, np.ndarray]:
    return inputs()


def _rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def _pair(inp, size: int = 64) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(inp[f"y_true_{size}"]), jnp.asarray(inp[f"y_pred_{size}"])


def test_inputs_match_fixture(ref, inp):
    for key in ("y_true_64", "y_pred_64", "y_true_128", "y_pred_128") + tuple(
        f"mask_{k}_a_64" for k in ("face", "eye", "mouth")
    ):
        flat = inp[key].astype(np.float64).ravel()
        expected = ref[f"check.{key}"]
        assert np.array_equal(flat[:6], expected[1:]), f"redrawn {key} differs (numpy RNG?)"
        assert abs(flat.sum() - expected[0]) < 1e-6, key


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("name", NAMES)
def test_per_sample_matches_faceswap(ref, inp, name, size):
    true, pred = _pair(inp, size)
    got = fl.compute(name, true, pred, faceswap_compat=True)
    assert got.shape == (2,) and got.dtype == jnp.float32
    assert _rel_err(got, ref[f"{name}.{size}.per_sample"]) < TOL
    if name not in COMPAT:  # the switch only changes the losses that have a layout bug
        assert np.array_equal(fl.compute(name, true, pred), got)


@pytest.mark.parametrize("name", ["pixel_gradient_diff", "laploss"])
def test_raw_map_matches_faceswap(ref, inp, name):
    true, pred = _pair(inp)
    fn = jax.jit(lambda t, p: registry.get(name)(t, p, faceswap_compat=True))
    got = np.asarray(fn(true, pred))[:1].transpose(0, 3, 1, 2)
    want = ref[f"{name}.64.raw"]
    assert got.shape == want.shape
    # Relative to the map's scale: single pixels of the maps come arbitrarily close to 0.
    assert float(np.max(np.abs(got - want)) / np.max(np.abs(want))) < TOL


def test_l_inf_norm_raw(ref, inp):
    got = fl.l_inf_norm(*_pair(inp), faceswap_compat=True)
    assert _rel_err(got, ref["l_inf_norm.64.raw"]) < TOL


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_masked(ref, inp, name):
    cfg = LossConfig(loss_function=name, loss_function_2="none", faceswap_compat=True)
    masks = {f"mask_{k}": inp[f"mask_{k}_a_64"] for k in ("face", "eye", "mouth")}
    true, pred = _pair(inp)
    loss = jax.jit(functools.partial(fl.side_losses, cfg))([true], [pred], **masks)
    assert _rel_err(loss.unweighted[0][name], ref[f"{name}.64.per_sample_masked"]) < TOL


def test_l_inf_norm_default_is_per_channel_max(inp):
    true, pred = _pair(inp)
    diff = np.abs(inp["y_true_64"] - inp["y_pred_64"])
    want = diff.max(axis=(1, 2)).mean(axis=-1)
    assert _rel_err(fl.compute("l_inf_norm", true, pred), want) < 1e-7
    # Faceswap's NCHW reading (max over C and H, mean over W) is a different number.
    assert _rel_err(fl.compute("l_inf_norm", true, pred, faceswap_compat=True), want) > 1e-2


def _np_neighbours(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Next and previous sample along `axis`, the edge sample standing in past either end."""
    idx = np.arange(x.shape[axis])
    nxt = np.take(x, np.minimum(idx + 1, idx[-1]), axis=axis)
    return nxt, np.take(x, np.maximum(idx - 1, 0), axis=axis)


def _np_first(x: np.ndarray, axis: int) -> np.ndarray:
    nxt, prv = _np_neighbours(x, axis)
    return (nxt - prv) * 0.5


def _np_second(x: np.ndarray, axis: int) -> np.ndarray:
    nxt, prv = _np_neighbours(x, axis)
    return nxt + prv - 2.0 * x


def _np_generalized(diff: np.ndarray, alpha: float) -> np.ndarray:
    shape = abs(2.0 - alpha)
    return BETA * shape / alpha * (((diff / BETA) ** 2 / shape + 1.0) ** (alpha / 2.0) - 1.0)


def test_pixel_gradient_diff_default_is_per_channel_h_w(inp):
    """Float64 reference: derivatives along H (y) and W (x) of each channel.

    The cross term is written as the product of the two first-difference operators, which is
    what Faceswap's eight diagonal sums amount to.
    """
    true, pred = (inp[k][:1].astype(np.float64) for k in ("y_true_64", "y_pred_64"))
    diff = pred - true
    terms = [
        _np_generalized(_np_first(diff, 2), 1.9999),
        _np_generalized(_np_first(diff, 1), 1.9999),
        _np_generalized(_np_second(diff, 2), 1.9999),
        _np_generalized(_np_second(diff, 1), 1.9999),
        2.0 * _np_generalized(_np_first(_np_first(diff, 1), 2), 1.9999),
    ]
    want = sum(terms) / 2.0
    got = np.asarray(fl.get("pixel_gradient_diff")(jnp.asarray(true), jnp.asarray(pred)))
    assert float(np.max(np.abs(got - want)) / np.max(want)) < TOL
    # Per channel: swapping colour channels only swaps the map's channels (not so in compat).
    pgd = fl.get("pixel_gradient_diff")
    swapped = pgd(jnp.asarray(true[..., ::-1]), jnp.asarray(pred[..., ::-1]))
    assert np.allclose(np.asarray(swapped)[..., ::-1], got, rtol=1e-6, atol=0)
    compat = registry.get("pixel_gradient_diff")(
        jnp.asarray(true), jnp.asarray(pred), faceswap_compat=True
    )
    assert float(np.max(np.abs(np.asarray(compat) - want)) / np.max(want)) > 0.1


def test_small_errors_keep_precision():
    """Faceswap's forms cancel for tiny errors; these must match the series to float32 accuracy."""
    d = np.array([1e-6, 1e-4, 3e-3, 0.2, 0.9, 1.0, 1.5], np.float32)
    zeros = jnp.zeros((1, 1, d.size, 1))
    d64 = d.astype(np.float64)
    # float64 log(cosh) itself cancels for tiny d: use its series there.
    series = d64**2 / 2 - d64**4 / 12 + d64**6 / 45
    want = np.where(d64 < 1e-2, series, np.log(np.cosh(d64)))
    got = np.asarray(fl.get("logcosh")(zeros, jnp.asarray(d)[None, None, :, None])).ravel()
    assert _rel_err(got, want) < 1e-6
    got = np.asarray(fl.get("smooth_loss")(zeros, jnp.asarray(d)[None, None, :, None])).ravel()
    assert _rel_err(got, BETA * (np.sqrt((d64 / BETA) ** 2 + 1.0) - 1.0)) < 1e-6
    # Negative errors give the same values (both are even functions).
    got_neg = fl.get("logcosh")(zeros, -jnp.asarray(d)[None, None, :, None])
    assert np.allclose(np.asarray(got_neg).ravel(), want, rtol=1e-6, atol=0)


def test_laploss_resize_matrices():
    """Blur, pool and upsample matrices against direct definitions (odd sizes included)."""
    signal = np.random.default_rng(1).random(37)
    blurred = gradient._blur_matrix(37, 5, 1.0) @ signal
    taps = np.exp(-(np.arange(-2, 3) ** 2) / 2.0)
    padded = np.pad(signal, 2, mode="edge")
    assert np.allclose(blurred, np.convolve(padded, taps / taps.sum(), "valid"), atol=1e-12)
    assert np.allclose(gradient._pool_matrix(37) @ signal, signal[:36].reshape(18, 2).mean(1))
    for src, dst in ((2, 64), (5, 37), (16, 64), (7, 7)):
        up = gradient._upsample_matrix(src, dst) @ signal[:src]
        want = jax.image.resize(jnp.asarray(signal[:src]), (dst,), "linear")
        assert np.allclose(up, np.asarray(want), atol=1e-6), (src, dst)


def test_laploss_sizes():
    true = jnp.zeros((1, 45, 70, 3))
    out = jax.jit(fl.get("laploss"))(true, true + 0.25)
    # A constant error passes only through the low-pass level: weight 2^-10 times 0.25.
    assert out.shape == true.shape
    # (The band levels are 0 up to the float32 rounding of the blur taps, ~1e-8.)
    assert np.allclose(np.asarray(out), 0.25 * 2.0**-10, rtol=1e-3)
    with pytest.raises(ValueError, match="at least 32 px"):
        fl.get("laploss")(jnp.zeros((1, 16, 64, 3)), jnp.zeros((1, 16, 64, 3)))


@pytest.mark.parametrize(
    ("name", "compat"), [(n, False) for n in NAMES] + [(n, True) for n in COMPAT]
)
def test_finite_gradients_at_identical_inputs(inp, name, compat):
    # These losses depend on y_pred - y_true only, so one image covers every identical pair.
    image = jnp.asarray(inp["y_true_64"])

    def mean_loss(t, p):
        return jnp.mean(registry.per_sample(fl.get(name), t, p, faceswap_compat=compat))

    value, grads = jax.jit(jax.value_and_grad(mean_loss, (0, 1)))(image, image)
    assert float(value) == 0.0
    # Finite (not necessarily 0: JAX's |x| passes the gradient of +x at x == 0).
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    grad_pred = jax.jit(jax.grad(mean_loss, 1))(image, image + 0.01)
    assert bool(jnp.all(jnp.isfinite(grad_pred))) and float(jnp.max(jnp.abs(grad_pred))) > 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_inputs(inp, name, dtype):
    true, pred = (x.astype(dtype) for x in _pair(inp))
    spec = fl.get(name)
    for compat in (False, True) if spec.compat else (False,):
        fn = jax.jit(lambda t, p, c=compat: spec(t, p, faceswap_compat=c))
        got = fn(true, pred)
        assert got.dtype == jnp.float32
        exact = fn(true.astype(jnp.float32), pred.astype(jnp.float32))
        assert float(jnp.max(jnp.abs(got - exact))) <= 1e-6 * float(jnp.max(jnp.abs(exact)))
    # Against the unrounded float32 inputs: only the inputs' rounding separates the two.
    tol = 0.05 if dtype == jnp.bfloat16 else 5e-3
    assert _rel_err(fl.compute(name, true, pred), fl.compute(name, *_pair(inp))) < tol


def test_registered():
    for name in NAMES:
        assert name in LOSS_FUNCTIONS
        LossConfig(loss_function=name)  # accepted by the config's validation
    assert not fl.get("l_inf_norm").spatial
    assert all(fl.get(n).spatial for n in NAMES if n != "l_inf_norm")
    assert {n for n in NAMES if fl.get(n).compat} == set(COMPAT)
