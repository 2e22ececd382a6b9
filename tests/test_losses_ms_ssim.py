"""fsjax's float32 MS-SSIM against Faceswap's formula evaluated in float64, scale by scale, on
inputs from several seeds (ms_ssim_reference.py). test_losses_structural compares with the values
Faceswap itself computed."""

import functools

import jax
import numpy as np
import pytest
from ms_ssim_reference import draw
from ms_ssim_reference import ms_ssim as reference

import fsjax.losses as fl
from fsjax.losses import structural

TOL = 1e-5  # relative, per scale and for the loss (float32 keeps ~1e-7 of every term here)


@functools.cache
def _jitted():
    return jax.jit(fl.ms_ssim), jax.jit(structural.ms_ssim_deficits)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_scale_and_the_loss_match_faceswaps_formula_in_float64(seed, size):
    true, pred = draw(seed, size)
    want, want_terms = reference(true, pred)
    loss, deficits = (f(true, pred) for f in _jitted())
    assert len(deficits) == len(want_terms) == 5
    for scale, (deficit, term) in enumerate(zip(deficits, want_terms, strict=True)):
        got = 1.0 - np.asarray(deficit, np.float64)
        assert got.shape == term.shape
        error = np.max(np.abs(got - term) / np.abs(term))
        assert error < TOL, f"scale {scale}: contrast-structure off by {error:.2e}"
    loss = np.asarray(loss, np.float64)
    per_sample, want_per_sample = loss.mean(axis=(1, 2, 3)), want.mean(axis=(1, 2, 3))
    assert np.max(np.abs(per_sample - want_per_sample) / want_per_sample) < TOL
    # Pixel by pixel the loss is ~0.01, 1 - a product of terms near 1.
    assert np.max(np.abs(loss - want)) / np.max(want) < TOL


def test_a_term_that_relu_zeroes_makes_the_loss_one_with_a_finite_gradient():
    true, pred = draw(4, 64)
    inverted = 1.0 - true  # contrast-structure < 0 almost everywhere
    want, terms = reference(true, inverted)
    assert np.mean(terms[0] < 0) > 0.5
    got = np.asarray(jax.jit(fl.ms_ssim)(true, inverted), np.float64)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=0)
    grad = jax.grad(lambda p: fl.ms_ssim(true, p).mean())(pred)
    assert bool(np.all(np.isfinite(np.asarray(grad))))
