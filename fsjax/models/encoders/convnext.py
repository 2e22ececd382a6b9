"""Keras' ConvNeXtTiny/Small/Base/Large/XLarge as Phaze-A's `convnext_*` encoders.

A constant ImageNet `Normalization` (`{name}_prestem_normalization`, Keras' default
`include_preprocessing=True`, which Faceswap keeps), a 4x4 stride-4 stem conv + LayerNorm, then
four stages of ConvNeXt blocks with a LayerNorm + 2x2 stride-2 conv between stages, and a final
unnamed LayerNorm (`layer_normalization`). Every LayerNorm uses epsilon 1e-6.

A block is a 7x7 depthwise conv (a Keras `Conv2D` with `groups=channels`: kernel (7, 7, 1, C)),
LayerNorm, Dense to 4C, exact GELU, Dense back to C, a `LayerScale` (per-channel scale, 1e-6 at
init), an identity `Activation` (stochastic depth is 0 in every Keras variant) and a residual
`keras.ops` add (an operation, not a layer: `add`, `add_1`, ..., recorded as `NumpyAdd`).

Keras names the one weight of each LayerScale `variable`, `variable_1`, ... by its session-wide
counter of unnamed variables (the layer's `gamma` attribute is not its name), so fsjax names them
the same way. The stem and the downsampling layers sit in nested Keras `Sequential` models
(`{name}_stem`, `{name}_downsampling_block_{i}`); fsjax keeps their layers flat, by their own
names, as Keras' flattened weight list and Faceswap's import see them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models.encoders.mobilenet import AutoNames
from fsjax.nn import blocks, layers
from fsjax.nn.conv import Conv2D
from fsjax.nn.initializers import Initializer, glorot_uniform
from fsjax.nn.normalization import LayerNormalization

Dtype = Any

_CONFIGS = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "extra_large": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}
"""(blocks per stage, channels per stage) of each variant (Keras' MODEL_CONFIGS)."""
ARCHS = tuple(f"convnext_{size}" for size in _CONFIGS)
_KERAS_NAMES = {"extra_large": "xlarge"}
_EPSILON = 1e-6
_LAYER_SCALE = 1e-6
_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_VARIANCE = ((0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2)


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


class GroupedConv2D(nn.Module):
    """Keras `Conv2D(filters=C, groups=C)` on C channels (ConvNeXt's depthwise conv): `kernel`
    (k, k, 1, C) and `bias` (C,), unlike `DepthwiseConv2D`'s (k, k, C, 1)."""

    kernel_size: int = 7
    padding: str = "SAME"
    kernel_init: Initializer = glorot_uniform
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, 1, c), self.param_dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel.astype(self.dtype), (1, 1), self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        return y + bias.astype(self.dtype)


class LayerScale(nn.Module):
    """Keras ConvNeXt's `LayerScale`: x times a per-channel weight (init `init_value`), whose
    name is Keras' automatic variable name (`weight_name`)."""

    init_value: float = _LAYER_SCALE
    weight_name: str = "variable"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param(self.weight_name, nn.initializers.constant(self.init_value),
                           (x.shape[-1],), self.param_dtype)
        return x.astype(self.dtype) * gamma.astype(self.dtype)


def prestem_normalization(x: jax.Array, name: str) -> jax.Array:
    """Keras `Normalization(mean=..., variance=...)` with ImageNet's constants: given its
    statistics it creates no weights, so it is a parameter-free layer here."""
    mean = jnp.asarray(_MEAN, jnp.float32)
    std = jnp.maximum(jnp.sqrt(jnp.asarray(_VARIANCE, jnp.float32)), 1e-7)
    y = ((x.astype(jnp.float32) - mean) / std).astype(x.dtype)
    config = {"axis": [-1], "invert": False, "mean": list(_MEAN), "variance": list(_VARIANCE)}
    return layers._done("Normalization", config, name, [x], y)


def _layer_norm(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    return LayerNormalization(epsilon=_EPSILON, **opts.policy.layer_kwargs(), name=name)(x)


def _conv(x: jax.Array, filters: int, kernel: int, name: str,
          opts: blocks.BlockOptions) -> jax.Array:
    return Conv2D(filters, kernel, kernel, "VALID", True, kernel_init=glorot_uniform,
                  **opts.policy.layer_kwargs(), name=name)(x)


def _block(x: jax.Array, dim: int, name: str, names: AutoNames,
           opts: blocks.BlockOptions) -> jax.Array:
    kwargs = opts.policy.layer_kwargs()
    y = GroupedConv2D(7, **kwargs, name=f"{name}_depthwise_conv")(x)
    y = _layer_norm(y, f"{name}_layernorm", opts)
    y = blocks.dense(y, 4 * dim, name=f"{name}_pointwise_conv_1", opts=opts)
    y = layers.activation(y, "gelu", name=f"{name}_gelu")
    y = blocks.dense(y, dim, name=f"{name}_pointwise_conv_2", opts=opts)
    y = LayerScale(_LAYER_SCALE, names("variable"), **kwargs, name=f"{name}_layer_scale")(y)
    y = layers.activation(y, "linear", name=f"{name}_identity")
    return layers._done("NumpyAdd", {}, names("add"), [x, y], x + y)


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          include_preprocessing: bool = True) -> jax.Array:
    """Keras' `ConvNeXt*(include_top=False)` feature map on `x` in [0, 255], layers named as
    Keras names them in a fresh session."""
    _check(arch)
    name = keras_model_name(arch)
    depths, dims = _CONFIGS[arch.removeprefix("convnext_")]
    names = AutoNames()
    if include_preprocessing:
        x = prestem_normalization(x, f"{name}_prestem_normalization")
    x = _conv(x, dims[0], 4, f"{name}_stem_conv", opts)
    x = _layer_norm(x, f"{name}_stem_layernorm", opts)
    for stage, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
        if stage:
            x = _layer_norm(x, f"{name}_downsampling_layernorm_{stage - 1}", opts)
            x = _conv(x, dim, 2, f"{name}_downsampling_conv_{stage - 1}", opts)
        for j in range(depth):
            x = _block(x, dim, f"{name}_stage_{stage}_block_{j}", names, opts)
    return _layer_norm(x, names("layer_normalization"), opts)


def keras_model_name(arch: str, **_: Any) -> str:
    """`convnext_tiny` ... `convnext_large`, and `convnext_xlarge` for `convnext_extra_large`;
    it prefixes every named layer."""
    _check(arch)
    size = arch.removeprefix("convnext_")
    return f"convnext_{_KERAS_NAMES.get(size, size)}"


def weights_file(arch: str, **_: Any) -> str:
    """Keras' no-top ImageNet file: `{model name}_notop.h5`."""
    return f"{keras_model_name(arch)}_notop.h5"
