"""Keras' EfficientNetV2 B0-B3 / S / M / L as Phaze-A's `efficientnet_v2_*` encoders.

A 3x3 stride-2 stem, stages of FusedMBConv blocks (one full 3x3 conv in place of expand +
depthwise, no squeeze-excite) then MBConv blocks (1x1 expand, 3x3 depthwise, squeeze-excite,
1x1 projection), and a 1x1 conv to 1280 channels (scaled by the width coefficient). Every conv
pads 'same' and starts from Keras' `CONV_KERNEL_INITIALIZER` (`efficientnet_conv_init`), every
BN uses momentum 0.9 (epsilon Keras' 1e-3), every activation is swish. Blocks with an identity
shortcut drop their residual branch per sample while training (Keras'
`Dropout(noise_shape=(None, 1, 1, 1))`, rate growing linearly with depth to 0.2).

Faceswap builds these with `include_preprocessing=False` (its input is already in (-1, 1));
`include_preprocessing=True` adds Keras' own front (`Rescaling` for S/M/L, `Rescaling` and an
ImageNet `Normalization` for the B models) for inputs in (0, 255).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from fsjax.models.encoders.efficientnet import Dropout
from fsjax.models.encoders.mobilenet import batch_norm, conv
from fsjax.nn import blocks, layers
from fsjax.nn.conv import DepthwiseConv2D
from fsjax.nn.initializers import efficientnet_conv_init

ARCHS = tuple(f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l"))

_KERNEL = 3  # every block of every variant uses 3x3 kernels
_B = ((1, 32, 16, 1, 0.0, 1, True), (2, 16, 32, 4, 0.0, 2, True), (2, 32, 48, 4, 0.0, 2, True),
      (3, 48, 96, 4, 0.25, 2, False), (5, 96, 112, 6, 0.25, 1, False),
      (8, 112, 192, 6, 0.25, 2, False))
_STAGES = {
    "b": _B,
    "s": ((2, 24, 24, 1, 0.0, 1, True), (4, 24, 48, 4, 0.0, 2, True),
          (4, 48, 64, 4, 0.0, 2, True), (6, 64, 128, 4, 0.25, 2, False),
          (9, 128, 160, 6, 0.25, 1, False), (15, 160, 256, 6, 0.25, 2, False)),
    "m": ((3, 24, 24, 1, 0.0, 1, True), (5, 24, 48, 4, 0.0, 2, True),
          (5, 48, 80, 4, 0.0, 2, True), (7, 80, 160, 4, 0.25, 2, False),
          (14, 160, 176, 6, 0.25, 1, False), (18, 176, 304, 6, 0.25, 2, False),
          (5, 304, 512, 6, 0.25, 1, False)),
    "l": ((4, 32, 32, 1, 0.0, 1, True), (7, 32, 64, 4, 0.0, 2, True),
          (7, 64, 96, 4, 0.0, 2, True), (10, 96, 192, 4, 0.25, 2, False),
          (19, 192, 224, 6, 0.25, 1, False), (25, 224, 384, 6, 0.25, 2, False),
          (7, 384, 640, 6, 0.25, 1, False)),
}
"""Keras' `DEFAULT_BLOCKS_ARGS` per variant (all B models share one): (repeats, input filters,
output filters, expand ratio, se ratio, strides, fused)."""
_COEFFICIENTS = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4),
                 "s": (1.0, 1.0), "m": (1.0, 1.0), "l": (1.0, 1.0)}
"""(width, depth) coefficients."""
_DROP_CONNECT = 0.2
_MEAN = (0.485, 0.456, 0.406)
_VARIANCE = (0.229**2, 0.224**2, 0.225**2)


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def _variant(arch: str) -> str:
    return arch.removeprefix("efficientnet_v2_")


def round_filters(filters: float, width: float, divisor: int = 8) -> int:
    """Keras' rounding of a width: nearest multiple of `divisor`, at least `divisor` (no 90% floor
    here, unlike MobileNet's `make_divisible`)."""
    filters *= width
    return int(max(divisor, int(filters + divisor / 2) // divisor * divisor))


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def _conv(x: jax.Array, filters: int, kernel: int, name: str, opts: blocks.BlockOptions, *,
          strides: int = 1, use_bias: bool = False) -> jax.Array:
    return conv(x, filters, kernel, name, opts, strides=strides, use_bias=use_bias,
                kernel_init=efficientnet_conv_init)


def _bn_act(x: jax.Array, bn: str, act: str | None, opts: blocks.BlockOptions) -> jax.Array:
    x = batch_norm(x, bn, opts, momentum=0.9)
    return x if act is None else layers.activation(x, "swish", name=act)


def _squeeze_excite(x: jax.Array, in_filters: int, se_ratio: float, name: str,
                    opts: blocks.BlockOptions) -> jax.Array:
    """Global average, a swish 1x1 conv to in_filters * se_ratio channels and a sigmoid 1x1 conv
    back, scaling `x`. Keras fuses both activations into the convs (no layers of their own)."""
    filters = x.shape[-1]
    se = layers.global_average_pooling(x, name=f"{name}se_squeeze")
    se = layers.reshape(se, (1, 1, filters), name=f"{name}se_reshape")
    se = jax.nn.silu(_conv(se, max(1, int(in_filters * se_ratio)), 1, f"{name}se_reduce", opts,
                           use_bias=True))
    se = jax.nn.sigmoid(_conv(se, filters, 1, f"{name}se_expand", opts, use_bias=True))
    return layers.multiply([x, se], name=f"{name}se_excite")


def _block(x: jax.Array, in_filters: int, out_filters: int, expand: int, se_ratio: float,
           strides: int, fused: bool, rate: float, name: str,
           opts: blocks.BlockOptions) -> jax.Array:
    """Keras' `FusedMBConvBlock` (`fused`) or `MBConvBlock`, named `{name}<layer>`."""
    inputs, filters = x, in_filters * expand
    if expand != 1:
        kernel, stride = (_KERNEL, strides) if fused else (1, 1)
        x = _conv(x, filters, kernel, f"{name}expand_conv", opts, strides=stride)
        x = _bn_act(x, f"{name}expand_bn", f"{name}expand_activation", opts)
    if not fused:
        x = DepthwiseConv2D(_KERNEL, strides, "SAME", False, kernel_init=efficientnet_conv_init,
                            **opts.policy.layer_kwargs(), name=f"{name}dwconv2")(x)
        x = _bn_act(x, f"{name}bn", f"{name}activation", opts)
    if 0 < se_ratio <= 1:
        x = _squeeze_excite(x, in_filters, se_ratio, name, opts)
    whole = fused and expand == 1  # a fused block without expansion is one 3x3 conv
    kernel, stride = (_KERNEL, strides) if whole else (1, 1)
    x = _conv(x, out_filters, kernel, f"{name}project_conv", opts, strides=stride)
    x = _bn_act(x, f"{name}project_bn", f"{name}project_activation" if whole else None, opts)
    if strides == 1 and in_filters == out_filters:
        if rate:
            x = Dropout(rate, name=f"{name}drop")(x)  # records itself for graph export
        x = layers.add([x, inputs], name=f"{name}add")
    return x


def _preprocess(x: jax.Array, variant: str) -> jax.Array:
    """Keras' `include_preprocessing=True` front: (0, 255) to (-1, 1) for S/M/L; to ImageNet
    mean/std units for the B models (a `Normalization` with constant statistics, no weights)."""
    if not variant.startswith("b"):
        return layers.rescaling(x, 1.0 / 128.0, -1.0, name="rescaling")
    x = layers.rescaling(x, 1.0 / 255.0, name="rescaling")
    mean, var = jnp.asarray(_MEAN, x.dtype), jnp.asarray(_VARIANCE, x.dtype)
    y = (x - mean) / jnp.maximum(jnp.sqrt(var), 1e-7)
    config = {"axis": [-1], "invert": False, "mean": list(_MEAN), "variance": list(_VARIANCE)}
    return layers._done("Normalization", config, "normalization", [x], y)


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          include_preprocessing: bool = False) -> jax.Array:
    """Keras' `EfficientNetV2*(include_top=False)` feature map, layers named as Keras names them
    (`stem_conv`, `block1a_project_conv`, ..., `top_activation`)."""
    _check(arch)
    variant = _variant(arch)
    width, depth = _COEFFICIENTS[variant]
    stages = _STAGES["b" if variant.startswith("b") else variant]
    if include_preprocessing:
        x = _preprocess(x, variant)
    x = _conv(x, round_filters(stages[0][1], width), 3, "stem_conv", opts, strides=2)
    x = _bn_act(x, "stem_bn", "stem_activation", opts)
    b, total = 0, float(sum(stage[0] for stage in stages))
    for i, (repeats, in_f, out_f, expand, se_ratio, strides, fused) in enumerate(stages):
        in_f, out_f = round_filters(in_f, width), round_filters(out_f, width)
        for j in range(round_repeats(repeats, depth)):
            if j > 0:
                strides, in_f = 1, out_f
            x = _block(x, in_f, out_f, expand, se_ratio, strides, fused,
                       _DROP_CONNECT * b / total, f"block{i + 1}{chr(j + 97)}_", opts)
            b += 1
    x = _conv(x, round_filters(1280, width), 1, "top_conv", opts)
    return _bn_act(x, "top_bn", "top_activation", opts)


def keras_model_name(arch: str, **_: Any) -> str:
    """`efficientnetv2-b0` ... `efficientnetv2-l`: the same at any size and with or without
    ImageNet weights."""
    _check(arch)
    return f"efficientnetv2-{_variant(arch)}"


def weights_file(arch: str, **_: Any) -> str:
    """Keras' no-top ImageNet file: `{model name}_notop.h5`."""
    return f"{keras_model_name(arch)}_notop.h5"
