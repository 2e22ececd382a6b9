"""Keras' MobileNetV2 as Phaze-A's `mobilenet_v2` encoder.

A 3x3 stride-2 stem, seventeen inverted-residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear
projection, identity shortcut where shapes allow) and a final 1x1 conv to 1280 channels (more for
alpha > 1). Every BN uses momentum 0.999. Strided depthwise convs pad explicitly with Keras'
`correct_pad` and convolve 'valid'. `alpha` scales the widths, rounded to multiples of 8.
"""

from __future__ import annotations

from typing import Any

import jax

from fsjax.models.encoders.mobilenet import batch_norm, conv, correct_pad, depthwise, relu
from fsjax.nn import blocks, layers

ARCHS = ("mobilenet_v2",)
_WEIGHT_ROWS = (96, 128, 160, 192, 224)
_BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6),
           (64, 1, 6), (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6),
           (160, 1, 6), (160, 1, 6), (320, 1, 6))
"""(filters, stride, expansion) of each inverted-residual block."""


def make_divisible(v: float, divisor: int = 8) -> int:
    """Keras' channel rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def _bn(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    return batch_norm(x, name, opts, momentum=0.999)


def _inverted_res_block(x: jax.Array, filters: int, stride: int, expansion: int, alpha: float,
                        block_id: int, opts: blocks.BlockOptions) -> jax.Array:
    inputs, in_channels = x, x.shape[-1]
    out_channels = make_divisible(int(filters * alpha), 8)
    prefix = f"block_{block_id}_"
    if block_id:
        x = conv(x, expansion * in_channels, 1, f"{prefix}expand", opts)
        x = relu(_bn(x, f"{prefix}expand_BN", opts), f"{prefix}expand_relu", 6.0)
    else:
        prefix = "expanded_conv_"
    padding = "SAME"
    if stride == 2:
        x = layers.zero_padding(x, correct_pad(x.shape[1], 3), name=f"{prefix}pad")
        padding = "VALID"
    x = depthwise(x, 3, f"{prefix}depthwise", opts, strides=stride, padding=padding)
    x = relu(_bn(x, f"{prefix}depthwise_BN", opts), f"{prefix}depthwise_relu", 6.0)
    x = conv(x, out_channels, 1, f"{prefix}project", opts)
    x = _bn(x, f"{prefix}project_BN", opts)
    if in_channels == out_channels and stride == 1:
        x = layers.add([inputs, x], name=f"{prefix}add")
    return x


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          alpha: float = 1.0) -> jax.Array:
    """Keras' `MobileNetV2(include_top=False)` feature map, layers named as Keras names them."""
    _check(arch)
    x = conv(x, make_divisible(32 * alpha, 8), 3, "Conv1", opts, strides=2)
    x = relu(_bn(x, "bn_Conv1", opts), "Conv1_relu", 6.0)
    for block_id, (filters, stride, expansion) in enumerate(_BLOCKS):
        x = _inverted_res_block(x, filters, stride, expansion, alpha, block_id, opts)
    last = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = conv(x, last, 1, "Conv_1", opts, padding="VALID")
    return relu(_bn(x, "Conv_1_bn", opts), "out_relu", 6.0)


def _rows(size: int, load_weights: bool) -> int:
    return 224 if load_weights and size not in _WEIGHT_ROWS else size


def keras_model_name(arch: str, *, size: int = 224, load_weights: bool = False,
                     alpha: float = 1.0, **_: Any) -> str:
    """`mobilenetv2_{alpha:.2f}_{rows}`: rows is the input size, or 224 where ImageNet weights
    were requested at a size Keras has none for."""
    _check(arch)
    return f"mobilenetv2_{alpha:0.2f}_{_rows(size, load_weights)}"


def weights_file(arch: str, *, size: int = 224, alpha: float = 1.0, **_: Any) -> str:
    """Keras' no-top file for this width (0.35, 0.5, 0.75, 1.0, 1.3, 1.4) and size (96..224,
    else 224)."""
    _check(arch)
    rows = _rows(size, True)
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
