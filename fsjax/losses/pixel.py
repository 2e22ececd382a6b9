"""Per-pixel losses: each compares the two batches value by value.

All functions take NHWC float batches in [0, 1] and compute in float32. The spatial ones return an
(N, H, W, C) map, which the collator masks and averages; `l_inf_norm` returns one value per item.
Faceswap gets mae/mse from torch (`L1Loss`/`MSELoss` with no reduction).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG2 = math.log(2.0)


def _f32(x: jax.Array) -> jax.Array:
    # Low-precision model outputs are upcast: these losses feed float32 reductions.
    return jnp.asarray(x, jnp.float32)


def mae(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Absolute error map |y - y_hat|."""
    return jnp.abs(y_true - y_pred)


def mse(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Squared error map (y - y_hat)^2."""
    return jnp.square(y_true - y_pred)


def logcosh(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """log(cosh(y - y_hat)) map.

    Faceswap writes it as d + softplus(-2d) - log 2, whose terms cancel for small errors (a
    well-trained model's), leaving float32 rounding noise as large as the loss. Below |d| = 1
    log1p(2 sinh^2(d/2)) gives the same value without cancellation; above it the softplus form
    is exact and cannot overflow.
    """
    size = jnp.abs(_f32(y_true) - _f32(y_pred))
    small = jnp.log1p(2.0 * jnp.square(jnp.sinh(0.5 * jnp.minimum(size, 1.0))))
    large = size - _LOG2 + jnp.log1p(jnp.exp(-2.0 * size))
    return jnp.where(size < 1.0, small, large)


def generalized_loss(diff: jax.Array, alpha: float, beta: float) -> jax.Array:
    """Barron's general robust loss of `diff`, scaled as Faceswap's `GeneralizedLoss`.

    beta * |2-a|/a * ((x^2/|2-a| + 1)^(a/2) - 1) with x = diff / beta, evaluated as
    expm1(a/2 * log1p(.)) so that small errors keep their precision (the power form subtracts
    1 from a number close to 1). Finite value and gradient at diff == 0.
    """
    shape = abs(2.0 - alpha)
    scaled = jnp.square(diff / beta) / shape
    return (beta * shape / alpha) * jnp.expm1(0.5 * alpha * jnp.log1p(scaled))


def smooth_loss(
    y_true: jax.Array, y_pred: jax.Array, *, alpha: float = 1.0, beta: float = 1.0 / 255.0
) -> jax.Array:
    """Faceswap's `smooth_loss` map: a smooth L1 (alpha 1) that is quadratic below ~beta."""
    return generalized_loss(_f32(y_pred) - _f32(y_true), alpha, beta)


def l_inf_norm(
    y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False
) -> jax.Array:
    """Per-item L-infinity error (N,): the largest |y - y_hat| of each channel, averaged over C.

    That is what Faceswap's code computes on the NHWC tensors it was written for (max over axes
    1, 2, mean over the last). Faceswap now passes NCHW, so it takes the max over (C, H) and
    averages over W; `faceswap_compat=True` reproduces that.
    """
    diff = jnp.abs(_f32(y_true) - _f32(y_pred))
    if faceswap_compat:
        return jnp.mean(jnp.max(diff, axis=(1, 3)), axis=-1)
    return jnp.mean(jnp.max(diff, axis=(1, 2)), axis=-1)
