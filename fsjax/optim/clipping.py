"""Faceswap's gradient clipping (models.md §5.2) as optax transforms, AutoClip included.

Clipping sits before the optimizer in the chain, so with gradient accumulation it sees the
averaged gradient of the whole optimizer step, as Faceswap clips only when it steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fsjax.config import OptimizerConfig

# torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6), so it clips slightly below max_norm.
_TORCH_NORM_EPS = 1e-6


def _global_scale(norm: jax.Array, max_norm: jax.Array | float) -> jax.Array:
    """torch's clip_grad_norm_ factor: min(max_norm / (norm + 1e-6), 1)."""
    return jnp.minimum(max_norm / (norm + _TORCH_NORM_EPS), 1.0)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Scales all gradients together so their global L2 norm is at most about `max_norm`.

    Unlike `optax.clip_by_global_norm`, follows torch's `clip_grad_norm_` (Faceswap's
    "global_norm"): the factor is max_norm / (norm + 1e-6), applied only when below 1.

    Args:
      max_norm: the largest global norm let through.

    Returns:
      A stateless transformation.
    """

    def update_fn(updates, state, params=None):
        del params
        scale = _global_scale(optax.tree.norm(updates), max_norm)
        return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _tensor_clip(g: jax.Array, max_norm: jax.Array | float) -> jax.Array:
    norm = jnp.linalg.norm(g.ravel())
    scale = jnp.where(norm > max_norm, max_norm / norm, 1.0)
    return (g * scale).astype(g.dtype)


def clip_by_tensor_norm(max_norm: float) -> optax.GradientTransformation:
    """Rescales each gradient tensor on its own to norm `max_norm` when its norm exceeds it.

    This is Faceswap's "norm" clipping (no epsilon: g * max_norm / ||g|| when ||g|| > max_norm).

    Args:
      max_norm: the largest norm a single tensor keeps.

    Returns:
      A stateless transformation.
    """

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: _tensor_clip(g, max_norm), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class AutoClipState(NamedTuple):
    """State of `autoclip`.

    Attributes:
      norms: ring buffer of the finite global gradient norms seen (f32[history]).
      count: norms recorded so far (int32); keeps counting past `history`, the slot written
        next is count % history.
      threshold: the clip threshold of the latest update (f32[]; 0 before any finite norm), kept
        so the training loop can log it.
    """

    norms: jax.Array
    count: jax.Array
    threshold: jax.Array


def _percentile(norms: jax.Array, n: jax.Array, percentile: float, nearest: bool) -> jax.Array:
    """The `percentile` of the first `n` (>= 1) recorded entries of the ring buffer.

    Linear interpolation as np.percentile's default, or TF's nearest rank (round half to even,
    as tf.round) when `nearest`. Unused slots sort last as +inf and are never reached.
    """
    valid = jnp.arange(norms.shape[0]) < n
    ordered = jnp.sort(jnp.where(valid, norms, jnp.inf))
    last = n - 1
    # (n - 1) * p is exact for integer p, so the division rounds once (10 % of 6 is index 0.5).
    pos = last.astype(jnp.float32) * percentile / 100.0
    if nearest:
        return ordered[jnp.clip(jnp.round(pos).astype(jnp.int32), 0, last)]
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, last)
    hi = jnp.minimum(lo + 1, last)
    frac = pos - lo.astype(jnp.float32)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


def autoclip(percentile: float, history: int, per_tensor: bool = False
             ) -> optax.GradientTransformation:
    """AutoClip: clip to a percentile of the recent global gradient norms.

    Every update records the global L2 norm of the gradients in a ring buffer of the last
    `history` norms, takes the `percentile` of the recorded norms (this one included) as the
    threshold, and clips the global norm to it with torch's `clip_grad_norm_` rule (Faceswap 3).
    A non-finite norm is not recorded and those gradients pass unclipped, as Faceswap does; the
    optimizer then sees them as they are.

    `per_tensor=True` is Faceswap 2's TensorFlow version: a nearest-rank percentile and every
    tensor clipped by its own norm to the threshold, g * thr / max(||g||, thr) (tf.clip_by_norm).

    Args:
      percentile: 0..100, Faceswap's int(clipping_value * 10).
      history: how many recent norms are kept (>= 1).
      per_tensor: Faceswap 2's per-tensor clipping and nearest-rank percentile.

    Returns:
      A transformation with `AutoClipState`.

    References:
      Seetharaman et al., AutoClip: Adaptive Gradient Clipping for Source Separation Networks,
      2020 (arXiv:2007.14469).
    """
    if history < 1:
        raise ValueError(f"autoclip history={history!r} must be at least 1")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"autoclip percentile={percentile!r} must be in [0, 100]")

    def init_fn(params: optax.Params) -> AutoClipState:
        del params
        return AutoClipState(norms=jnp.zeros([history], jnp.float32),
                             count=jnp.zeros([], jnp.int32),
                             threshold=jnp.zeros([], jnp.float32))

    def per_tensor_clip(g: jax.Array, threshold: jax.Array) -> jax.Array:
        bound = jnp.maximum(jnp.linalg.norm(g.ravel()), threshold)
        safe = jnp.where(bound > 0, bound, 1.0)  # all-zero tensor under a zero threshold
        return (g * (threshold / safe)).astype(g.dtype)

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates).astype(jnp.float32)
        finite = jnp.isfinite(norm)
        norms = jnp.where(finite, state.norms.at[state.count % history].set(norm), state.norms)
        count = state.count + finite.astype(jnp.int32)
        n = jnp.clip(count, 1, history)
        threshold = jnp.where(finite, _percentile(norms, n, percentile, per_tensor),
                              state.threshold)
        if per_tensor:
            clipped = jax.tree.map(lambda g: per_tensor_clip(g, threshold), updates)
        else:
            scale = _global_scale(norm, threshold)
            clipped = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
        out = jax.tree.map(lambda c, g: jnp.where(finite, c, g), clipped, updates)
        return out, AutoClipState(norms=norms, count=count, threshold=threshold)

    return optax.GradientTransformation(init_fn, update_fn)


def make_clipping(config: OptimizerConfig) -> optax.GradientTransformation:
    """The clipping transform `config.gradient_clipping` selects (identity for "none")."""
    method, value = config.gradient_clipping, config.clipping_value
    if method == "none":
        return optax.identity()
    if method == "global_norm":
        return clip_by_global_norm(value)
    if method == "norm":
        return clip_by_tensor_norm(value)
    if method == "value":
        return optax.clip(value)
    if method == "autoclip":
        # Faceswap truncates: clipping_value 0.25 gives the 2nd percentile, not the 2.5th.
        return autoclip(float(int(value * 10)), config.autoclip_history,
                        config.autoclip_per_tensor)
    raise ValueError(f"gradient_clipping={method!r} is not one of none, autoclip, "
                     "global_norm, norm, value")
