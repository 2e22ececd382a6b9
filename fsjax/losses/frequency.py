"""Focal frequency loss (Jiang et al. 2021): squared spectrum error, weighted towards hard bands.

The map is in the frequency domain: entry (n, u, v, c) is the error of channel c's (u, v) DFT
coefficient. Faceswap still returns it as a spatial map, so its collator multiplies the face
masks onto frequencies; fsjax keeps that layout so the two agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt for x >= 0 with gradient 0 (not inf * 0 = NaN) at x == 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def ffl(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    faceswap_compat: bool = False,
    alpha: float = 1.0,
    patch_factor: int = 1,
    log_matrix: bool = False,
    batch_matrix: bool = False,
    epsilon: float = 1e-6,
) -> jax.Array:
    """Focal frequency loss map w * |F(y_hat) - F(y)|^2, shape (N, H / p, W / p, C).

    F is the orthonormal 2-D DFT of each (patch, channel); w = |F(y_hat) - F(y)|^alpha divided by
    its maximum over the patch's frequencies (over everything with `batch_matrix`), optionally
    log(1 + .)-compressed first. The map is averaged over the p x p patches.

    The paper's code treats w as a constant (detached). Faceswap does not, so its gradient also
    pushes w, which sharpens the focus on the hardest frequency; `faceswap_compat` keeps that.
    Values are the same in both modes.
    """
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    n, h, w, c = y_true.shape
    if h % patch_factor or w % patch_factor:
        raise ValueError(f"patch_factor {patch_factor} must divide the image size {h}x{w}")
    ph, pw = h // patch_factor, w // patch_factor
    # The DFT is linear: transforming the difference avoids subtracting two large spectra (the
    # DC term is ~sqrt(H*W) times the mean), so it is both cheaper and more exact.
    diff = (y_pred - y_true).reshape(n, patch_factor, ph, patch_factor, pw, c)
    diff = diff.transpose(0, 1, 3, 2, 4, 5).reshape(n, patch_factor**2, ph, pw, c)
    spectrum = jnp.fft.fft2(diff, axes=(2, 3), norm="ortho")
    distance = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    weight = _safe_sqrt(distance)
    if alpha != 1.0:
        weight = jnp.where(weight > 0, jnp.where(weight > 0, weight, 1.0) ** alpha, 0.0)
    if log_matrix:
        weight = jnp.log(weight + 1.0)
    scale = jnp.max(weight) if batch_matrix else jnp.max(weight, axis=(2, 3), keepdims=True)
    # Faceswap then clamps to [0, 1]; w <= its own maximum, so that is a no-op and is left out
    # (a clip would also halve the gradient at the maximum, where torch's clamp passes it).
    weight = weight / jnp.maximum(scale, epsilon)
    if not faceswap_compat:
        weight = jax.lax.stop_gradient(weight)
    return jnp.mean(weight * distance, axis=1)
