"""Mask handling for the collator: resizing to each output size and Faceswap's multipliers.

Faceswap builds every mask per output size with OpenCV's INTER_AREA. Masks reach fsjax once, at the
largest output size, so smaller outputs get them by area averaging here (identical to INTER_AREA
when shrinking, including non-integer ratios).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_PRECISION = jax.lax.Precision.HIGHEST


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights: each output cell averages the source cells it overlaps, by overlap."""
    if dst > src:
        raise ValueError(f"area resize only shrinks: {src} -> {dst}")
    scale = src / dst
    edges = np.arange(dst + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(src, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return (overlap / scale).astype(np.float32)


def area_resize(images: jax.Array, height: int, width: int) -> jax.Array:
    """Shrink an NHWC batch to (height, width) by area averaging; a no-op at the same size."""
    if images.shape[1:3] == (height, width):
        return images
    rows = jnp.asarray(_area_matrix(images.shape[1], height))
    cols = jnp.asarray(_area_matrix(images.shape[2], width))
    out = jnp.einsum("hk,nkwc->nhwc", rows, images, precision=_PRECISION)
    return jnp.einsum("wk,nhkc->nhwc", cols, out, precision=_PRECISION)


def weight_map(
    loss_map: jax.Array,
    face: jax.Array | None,
    eye: jax.Array | None,
    mouth: jax.Array | None,
    eye_multiplier: float,
    mouth_multiplier: float,
) -> jax.Array:
    """Apply Faceswap's penalized-mask weighting to a spatial loss map.

    The face mask multiplies first; the eye and mouth boosts then each add `map * mask * mult`
    on top of the map so far, so where eye and mouth regions overlap the boosts compound. Pass
    None for a mask that is not in use.
    """
    if face is not None:
        loss_map = loss_map * face
    if eye is not None:
        loss_map = loss_map + loss_map * eye * eye_multiplier
    if mouth is not None:
        loss_map = loss_map + loss_map * mouth * mouth_multiplier
    return loss_map
