"""Per-pixel losses: each compares the two batches value by value and keeps the spatial layout.

All functions take NHWC float batches in [0, 1] and return an (N, H, W, C) map, which the collator
masks and averages. Faceswap gets these two from torch (`L1Loss`/`MSELoss` with no reduction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mae(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Absolute error map |y - y_hat|."""
    return jnp.abs(y_true - y_pred)


def mse(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Squared error map (y - y_hat)^2."""
    return jnp.square(y_true - y_pred)
