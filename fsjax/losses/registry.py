"""Name -> loss function table, using Faceswap's option names (`global.loss.loss_function`).

A loss is *spatial* when it returns an (N, H', W', C') map that masks can multiply, and
*non-spatial* when it returns one value per item (N,); the collator treats the two differently,
as Faceswap does. Losses that reproduce a Faceswap bug only on request declare `compat=True` and
receive the `faceswap_compat` flag.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from fsjax.losses import flip, frequency, gradient, lpips, pixel, structural


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """How to call one loss function.

    Attributes:
        fn: `fn(y_true, y_pred)` (plus `faceswap_compat=` when `compat`) on NHWC float32.
        spatial: True if `fn` returns an (N, H', W', C') map, False if it returns (N,).
        compat: True if `fn` takes the `faceswap_compat` keyword.
    """

    fn: Callable[..., jax.Array]
    spatial: bool = True
    compat: bool = False

    def __call__(
        self, y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False
    ) -> jax.Array:
        if self.compat:
            return self.fn(y_true, y_pred, faceswap_compat=faceswap_compat)
        return self.fn(y_true, y_pred)


# Read-only so that no caller can change which function a name means at run time.
LOSSES: Mapping[str, LossSpec] = types.MappingProxyType(
    {
        "mae": LossSpec(pixel.mae),
        "mse": LossSpec(pixel.mse),
        "ssim": LossSpec(structural.ssim),
        # Usable only through get(name, lpips_weights=folder); these stand-ins explain that.
        "lpips_alex": LossSpec(lpips.unavailable("lpips_alex"), compat=True),
        "lpips_squeeze": LossSpec(lpips.unavailable("lpips_squeeze")),
        "lpips_vgg16": LossSpec(lpips.unavailable("lpips_vgg16")),
        "logcosh": LossSpec(pixel.logcosh),
        "smooth_loss": LossSpec(pixel.smooth_loss),
        "l_inf_norm": LossSpec(pixel.l_inf_norm, spatial=False, compat=True),
        "pixel_gradient_diff": LossSpec(gradient.pixel_gradient_diff, compat=True),
        "laploss": LossSpec(gradient.laploss),
        "ms_ssim": LossSpec(structural.ms_ssim),
        "gmsd": LossSpec(structural.gmsd, compat=True),
        "ffl": LossSpec(frequency.ffl, compat=True),
        "flip": LossSpec(flip.ldr_flip),
    }
)


def get(name: str, *, lpips_weights: str | os.PathLike | None = None) -> LossSpec:
    """The spec registered under `name`; unknown names raise ValueError listing the known ones.

    The LPIPS losses need `lpips_weights` (`LossConfig.lpips_weights`): their frozen networks
    are loaded from that folder and bound into the returned spec.
    """
    try:
        spec = LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss function {name!r}: choose one of {', '.join(sorted(LOSSES))}"
        ) from None
    if lpips_weights is not None and name in lpips.LOSS_NETS:
        return dataclasses.replace(spec, fn=lpips.loss_fn(name, lpips_weights))
    return spec


def per_sample(
    spec: LossSpec, y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False
) -> jax.Array:
    """Unmasked per-item loss (N,): a spatial map averaged over everything but the batch axis."""
    out = spec(y_true, y_pred, faceswap_compat=faceswap_compat)
    if spec.spatial:
        return jnp.mean(out, axis=tuple(range(1, out.ndim)))
    return out


@jax.jit(static_argnames=("name", "faceswap_compat"))
def _compute(name: str, y_true: jax.Array, y_pred: jax.Array, faceswap_compat: bool) -> jax.Array:
    return per_sample(get(name), y_true, y_pred, faceswap_compat=faceswap_compat)


def compute(
    name: str, y_true: jax.Array, y_pred: jax.Array, *, faceswap_compat: bool = False
) -> jax.Array:
    """Per-item loss (N,) of one function, as the collator weighs it before masking.

    Args:
        name: Faceswap loss name (`mae`, `mse`, `ssim`, ...).
        y_true: Target batch, NHWC, float in [0, 1]; any float dtype (computed in float32).
        y_pred: Predicted batch, same shape.
        faceswap_compat: Reproduce Faceswap's known bug for losses that have one.

    Returns:
        float32 array of shape (N,).
    """
    get(name)  # fail with the list of names before tracing
    return _compute(
        name,
        jnp.asarray(y_true, jnp.float32),
        jnp.asarray(y_pred, jnp.float32),
        faceswap_compat=bool(faceswap_compat),
    )
