"""Faceswap's kernel initializers (`lib/model/initializers.py`, reference/models.md §1.2).

All are ordinary JAX initializers `init(key, shape, dtype)`, so they run inside a jitted
`model.init` and draw from the model's own PRNG key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.nn.precision import Policy

Initializer = Callable[..., jax.Array]

he_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
"""Faceswap's default kernel initializer for its Conv2D wrappers."""
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
"""Keras' HeNormal (truncated, stddev corrected), used by Phaze-A's G-Block style Dense layers."""
glorot_uniform = nn.initializers.xavier_uniform()
"""Keras' default for plain Dense/Conv2D layers created outside the wrappers."""
residual_second_init = nn.initializers.variance_scaling(0.2, "fan_in", "uniform")
"""Faceswap's ResidualBlock starts its second conv small, so each block begins near identity."""


def icnr(base: Initializer, scale: int = 2) -> Initializer:
    """ICNR (Aitken et al. 2017): draw a quarter of the output channels and tile them.

    With TF's depth-to-space order (`blocks.pixel_shuffle`) output channel `c` of the shuffle
    reads conv channels `c + k * cout / scale**2`, so tiling makes the `scale x scale` sub-pixels of
    every output start identical: no checkerboard at initialisation. Faceswap always uses
    scale 2, whatever the shuffle that follows.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        reps = scale * scale
        sub = base(key, (*shape[:-1], shape[-1] // reps), dtype)
        return jnp.tile(sub, (1,) * (len(shape) - 1) + (reps,))

    # The Keras class this stands for, for graph export (`fsjax.interop.keras_graph`).
    init.faceswap = ("ICNR", {"scale": scale, "initializer": base})  # type: ignore[attr-defined]
    return init


def _symmetrize(a: jax.Array) -> jax.Array:
    """A + Aᵀ - diag(A) over the last two axes (keras-contrib's construction)."""
    diag = jnp.diagonal(a, axis1=-2, axis2=-1)
    return a + jnp.swapaxes(a, -1, -2) - diag[..., None] * jnp.eye(a.shape[-1], dtype=a.dtype)


def convolution_aware(eps_std: float = 0.05) -> Initializer:
    """Convolution-Aware initialization (Aghajanyan 2017) as Faceswap computes it.

    Each output filter's `cin` input kernels are built from orthonormal vectors of real 2-D
    Fourier coefficients (left singular vectors of random symmetric matrices), inverse-transformed
    to (kh, kw), perturbed with N(0, eps_std) noise, and the whole tensor rescaled to variance
    2 / fan_in. Kernels that are not 4-D fall back to an orthogonal initializer, as Faceswap's.
    """
    orthogonal = nn.initializers.orthogonal()

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        if len(shape) != 4:
            return orthogonal(key, shape, dtype)
        kh, kw, cin, cout = shape
        fourier = (kh, kw // 2 + 1)
        size = fourier[0] * fourier[1]
        k_basis, k_noise = jax.random.split(key)
        if size == 1:
            basis = eps_std * jax.random.normal(k_basis, (cout, cin, size))
        else:
            blocks = cin // size + 1
            a = _symmetrize(jax.random.normal(k_basis, (cout, blocks, size, size)))
            u = jnp.swapaxes(jnp.linalg.svd(a)[0], -1, -2)
            basis = u.reshape(cout, blocks * size, size)[:, :cin, :]
        basis = basis.reshape(cout, cin, *fourier)
        kernels = jnp.fft.irfft2(basis, s=(kh, kw))
        kernels = kernels + eps_std * jax.random.normal(k_noise, kernels.shape)
        kernels = kernels * jnp.sqrt(2.0 / (kh * kw * cin) / jnp.var(kernels))
        return kernels.transpose(2, 3, 1, 0).astype(dtype)

    # The Keras class this stands for, for graph export (`fsjax.interop.keras_graph`).
    init.faceswap = ("ConvolutionAware",  # type: ignore[attr-defined]
                     {"eps_std": eps_std, "seed": None, "initialized": False})
    return init


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """Faceswap's global build switches (`icnr_init`, `conv_aware_init`, `reflect_padding`),
    locked when a model is created, and the precision policy of its layers. Every block and
    sub-model takes this one object and applies it as Faceswap does."""

    icnr_init: bool = False
    conv_aware_init: bool = False
    reflect_padding: bool = False
    policy: Policy = Policy()

    def kernel_init(self, given: Initializer | None, *, is_upscale: bool = False) -> Initializer:
        """The kernel initializer of a Faceswap conv wrapper (models.md §1.2): conv-aware replaces
        any given one, no given one means He-uniform, and upscale convs are wrapped in ICNR."""
        if self.conv_aware_init:
            init = convolution_aware()
        else:
            init = he_uniform if given is None else given
        return icnr(init) if is_upscale and self.icnr_init else init


efficientnet_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
"""Keras EfficientNet's (v1 and v2) `CONV_KERNEL_INITIALIZER`: VarianceScaling(2.0, fan_out,
truncated normal), for its Conv2D and DepthwiseConv2D kernels (fan_out of a depthwise kernel is
kh * kw * depth_multiplier, as in Keras)."""
efficientnet_dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")
"""Keras EfficientNet's `DENSE_KERNEL_INITIALIZER`: VarianceScaling(1/3, fan_out, uniform)."""
