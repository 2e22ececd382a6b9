"""Normalization layers with Faceswap's formulas and Keras' weight names (models.md §1.5).

Statistics are computed in float32 whatever the compute dtype: a variance over a 4x4x1024
activation in bfloat16 loses most of its digits.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.nn import layers

Dtype = Any


class InstanceNormalization(nn.Module):
    """Faceswap's InstanceNormalization as its plugins use it (`axis=None`).

    Quirks kept on purpose, since saved models depend on them: the statistics run over all of
    H x W x C per sample (a per-sample layer norm, not per-channel), eps is added to the standard
    deviation rather than the variance, and `gamma`/`beta` are scalars of shape (1,).
    """

    epsilon: float = 1e-3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param("gamma", nn.initializers.ones, (1,), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros, (1,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        axes = tuple(range(1, x.ndim))
        mean = x32.mean(axes, keepdims=True)
        std = jnp.sqrt(((x32 - mean) ** 2).mean(axes, keepdims=True))
        y = (x32 - mean) / (std + self.epsilon) * gamma + beta
        return y.astype(self.dtype)


def ada_instance_norm(x: jax.Array, beta: jax.Array, gamma: jax.Array, epsilon: float = 1e-3,
                      name: str | None = None) -> jax.Array:
    """Faceswap's AdaInstanceNormalization: per sample and channel over H, W, eps on σ, then the
    style's gamma and beta (each (N, 1, 1, C)). No weights; computed in float32. A Keras layer
    on the list [x, beta, gamma] (reported for graph export)."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean((1, 2), keepdims=True)
    std = jnp.sqrt(((x32 - mean) ** 2).mean((1, 2), keepdims=True))
    out = (x32 - mean) / (std + epsilon) * gamma.astype(jnp.float32) + beta.astype(jnp.float32)
    config = {"axis": -1, "momentum": 0.99, "epsilon": epsilon, "center": True, "scale": True}
    return layers._done("AdaInstanceNormalization", config, name, [x, beta, gamma], out)


class BatchNormalization(nn.Module):
    """Keras BatchNormalization over the last axis (momentum 0.99, eps 1e-3).

    Parameters `gamma`, `beta`; moving statistics `moving_mean`, `moving_variance` in the
    `batch_stats` collection. It uses (and updates) batch statistics when `batch_stats` is
    mutable, i.e. in the train step, and the moving statistics otherwise, as Keras does with
    `training=True/False`.
    """

    momentum: float = 0.99
    epsilon: float = 1e-3
    center: bool = True  # Keras' center/scale: False drops `beta` / `gamma` (Inception's BNs)
    scale: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        gamma = (self.param("gamma", nn.initializers.ones, (c,), self.param_dtype)
                 if self.scale else 1.0)
        beta = (self.param("beta", nn.initializers.zeros, (c,), self.param_dtype)
                if self.center else 0.0)
        moving_mean = self.variable("batch_stats", "moving_mean", jnp.zeros, (c,), jnp.float32)
        moving_var = self.variable("batch_stats", "moving_variance", jnp.ones, (c,), jnp.float32)
        x32 = x.astype(jnp.float32)
        if self.is_mutable_collection("batch_stats"):
            axes = tuple(range(x.ndim - 1))
            mean = x32.mean(axes)
            var = ((x32 - mean) ** 2).mean(axes)
            if not self.is_initializing():
                m = self.momentum
                moving_mean.value = m * moving_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
                moving_var.value = m * moving_var.value + (1 - m) * jax.lax.stop_gradient(var)
        else:
            mean, var = moving_mean.value, moving_var.value
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * gamma + beta
        return y.astype(self.dtype)


class LayerNormalization(nn.Module):
    """Keras LayerNormalization over the last axis (eps 1e-3), weights `gamma`, `beta`."""

    epsilon: float = 1e-3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (c,), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros, (c,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * gamma + beta).astype(self.dtype)


class GroupNormalization(nn.Module):
    """Faceswap's GroupNormalization: 32 groups, stats over (H, W, C/32), eps 1e-6,
    weights `gamma`, `beta` of shape (1, 1, 1, C)."""

    groups: int = 32
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        gamma = self.param("gamma", nn.initializers.ones, (1, 1, 1, c), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros, (1, 1, 1, c), self.param_dtype)
        g = x.astype(jnp.float32).reshape(n, h, w, self.groups, c // self.groups)
        mean = g.mean((1, 2, 4), keepdims=True)
        var = ((g - mean) ** 2).mean((1, 2, 4), keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(n, h, w, c)
        return (y * gamma + beta).astype(self.dtype)


class RMSNormalization(nn.Module):
    """Faceswap's RMSNormalization over the last axis (eps 1e-8, no bias), weight `scale`."""

    epsilon: float = 1e-8
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt((x32 ** 2).mean(-1, keepdims=True) + self.epsilon)
        return (y * scale).astype(self.dtype)


class Normalization(nn.Module):
    """Keras' `Normalization` preprocessing layer (EfficientNet and ConvNeXt open with one):
    (x - mean) / max(sqrt(variance), 1e-7) over the last axis. Its `mean`, `variance` (c,) and
    `count` () are data, not trained: they sit in `batch_stats` with the BatchNorm statistics
    (Keras counts them as non-trainable weights) and are never updated. Unadapted (as Keras
    builds it with `weights=None`) it is the identity."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32).value
        var = self.variable("batch_stats", "variance", jnp.ones, (c,), jnp.float32).value
        self.variable("batch_stats", "count", lambda: jnp.zeros((), jnp.int32))
        y = (x.astype(jnp.float32) - mean) / jnp.maximum(jnp.sqrt(var), 1e-7)
        return y.astype(self.dtype)
