"""Losses on image derivatives: Faceswap's `pixel_gradient_diff` (GradientLoss) and `laploss`.

Both return an (N, H, W, C) map that the collator masks and averages. Differences are taken of
y_pred - y_true once, rather than of each image and then subtracted: every operator here before
the final nonlinearity is linear, so the two agree up to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.losses.pixel import generalized_loss

# The fixture match (1e-5) needs true float32 sums, not TF32/bf16 matmul passes.
_PRECISION = jax.lax.Precision.HIGHEST


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------------------------------------
# pixel_gradient_diff


def _next(x: jax.Array, axis: int) -> jax.Array:
    """x[min(i + 1, n - 1)] along `axis`: the right neighbour, the edge repeated at the end."""
    n = x.shape[axis]
    return jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                            jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)


def _prev(x: jax.Array, axis: int) -> jax.Array:
    """x[max(i - 1, 0)] along `axis`."""
    n = x.shape[axis]
    return jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)


def _first(x: jax.Array, axis: int) -> jax.Array:
    # Central difference, one-sided at the borders, halved everywhere (borders included).
    return (_next(x, axis) - _prev(x, axis)) * 0.5


def _second(x: jax.Array, axis: int) -> jax.Array:
    return (_next(x, axis) + _prev(x, axis)) - 2.0 * x


def _cross(x: jax.Array, y_axis: int, x_axis: int) -> jax.Array:
    # Faceswap's two diagonal sums, kept in its order of operations: their difference is
    # 4 * first(first(x, y_axis), x_axis).
    nxt, prv = _next(x, x_axis), _prev(x, x_axis)
    main = _next(nxt, y_axis) + _prev(prv, y_axis)
    anti = _prev(nxt, y_axis) + _next(prv, y_axis)
    return (main - anti) * 0.25


def pixel_gradient_diff(
    y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False
) -> jax.Array:
    """Faceswap's GradientLoss map: robust loss on first and second derivative differences.

    [gl(dx) + gl(dy) + gl(dxx) + gl(dyy) + 2 gl(dxy)] / 2 with gl the generalized loss at alpha
    1.9999 (~L2), beta 1/255. By default y runs along H and x along W, per channel, as Faceswap's
    indices (written for NHWC) intend. Faceswap passes NCHW, so its "x" runs along H and its "y"
    across the colour channels; `faceswap_compat=True` reproduces that.
    """
    diff = _f32(y_pred) - _f32(y_true)
    y_axis, x_axis = (3, 1) if faceswap_compat else (1, 2)
    derivatives = jnp.stack([
        _first(diff, x_axis),
        _first(diff, y_axis),
        _second(diff, x_axis),
        _second(diff, y_axis),
        _cross(diff, y_axis, x_axis),
    ])
    # One robust-loss call on the stack: separate calls made XLA's CPU gradient ~6x slower.
    dx, dy, dxx, dyy, dxy = generalized_loss(derivatives, alpha=1.9999, beta=1.0 / 255.0)
    return ((dx + dy) + (dxx + dyy + dxy * 2.0)) / 2.0


# ---------------------------------------------------------------------------------------------
# laploss
#
# Every step of the pyramid is a fixed linear map along H and along W (replicate-padded blur,
# 2x2 average pool, bilinear upsample), so each is a small constant matrix built with numpy at
# trace time and applied as a matmul, as the SSIM filter is (structural.py).


def _blur_matrix(length: int, size: int, sigma: float) -> np.ndarray:
    """(length, length): replicate padding + normalised Gaussian along one axis."""
    offsets = np.arange(size, dtype=np.float64) - size // 2
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    taps /= taps.sum()  # Faceswap's 2-D kernel is the outer product of these taps
    src = np.clip(np.arange(length)[:, None] + np.arange(size)[None, :] - size // 2, 0, length - 1)
    matrix = np.zeros((length, length), np.float64)
    rows = np.broadcast_to(np.arange(length)[:, None], src.shape)
    np.add.at(matrix, (rows, src), np.broadcast_to(taps, src.shape))
    return matrix


def _pool_matrix(length: int) -> np.ndarray:
    """(length // 2, length): 2-wide average, dropping an odd last sample as avg_pool2d does."""
    matrix = np.zeros((length // 2, length), np.float64)
    rows = np.arange(length // 2)
    matrix[rows, 2 * rows] = matrix[rows, 2 * rows + 1] = 0.5
    return matrix


def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src): torch's bilinear resize, align_corners=False (half-pixel, clamped edges)."""
    pos = np.maximum((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5, 0.0)
    low = np.minimum(np.floor(pos).astype(int), src - 1)
    high = np.minimum(low + 1, src - 1)
    frac = pos - low
    matrix = np.zeros((dst, src), np.float64)
    np.add.at(matrix, (np.arange(dst), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(dst), high), frac)
    return matrix


def _apply(rows: np.ndarray, cols: np.ndarray, x: jax.Array) -> jax.Array:
    """rows @ x @ cols.T over (H, W) of an NHWC batch."""
    rows_, cols_ = jnp.asarray(rows, jnp.float32), jnp.asarray(cols, jnp.float32)
    x = jnp.einsum("ih,nhwc->niwc", rows_, x, precision=_PRECISION)
    return jnp.einsum("jw,niwc->nijc", cols_, x, precision=_PRECISION)


def laploss(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    max_levels: int = 5,
    gaussian_size: int = 5,
    gaussian_sigma: float = 1.0,
) -> jax.Array:
    """Faceswap's Laplacian pyramid L1 map, (N, H, W, C).

    Level i (i < max_levels) is cur - blur(cur), with cur halved by a 2x2 average of the blurred
    image each level; the last level is the remaining low-pass image. Each level's |error| is
    weighted 2^(-2i), resized back to H x W (bilinear) and summed.
    """
    diff = _f32(y_pred) - _f32(y_true)
    height, width = diff.shape[1:3]
    if min(height, width) >> max_levels < 1:
        raise ValueError(
            f"laploss with {max_levels} levels needs images of at least {2**max_levels} px, "
            f"got {height}x{width}"
        )
    total = jnp.zeros_like(diff)
    current = diff
    for level in range(max_levels + 1):
        h, w = current.shape[1:3]
        if level < max_levels:
            blur_h = _blur_matrix(h, gaussian_size, gaussian_sigma)
            blur_w = _blur_matrix(w, gaussian_size, gaussian_sigma)
            blurred = _apply(blur_h, blur_w, current)
            band = current - blurred
        else:
            band = current
        error = jnp.abs(band)
        if (h, w) != (height, width):
            error = _apply(_upsample_matrix(h, height), _upsample_matrix(w, width), error)
        total = total + error * (2.0 ** (-2 * level))
        if level < max_levels:
            current = _apply(_pool_matrix(h), _pool_matrix(w), blurred)
    return total
