"""Keras' MobileNet (v1) as Phaze-A's `mobilenet` encoder, plus small helpers the MobileNet v2/v3
and NASNet encoder files share with it.

MobileNet v1 is a 3x3 stride-2 stem and thirteen depthwise-separable blocks (depthwise 3x3, BN,
ReLU6, pointwise 1x1, BN, ReLU6). Strided depthwise convs pad the bottom/right by one pixel
explicitly (`conv_pad_{i}`) and convolve 'valid', as Keras does. `alpha` scales every width,
`depth_multiplier` the depthwise convs' channel multiplier; `dropout` only feeds Keras'
classification top, which Phaze-A never builds.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import jax.numpy as jnp

from fsjax.nn import blocks, layers
from fsjax.nn.conv import Conv2D, DepthwiseConv2D
from fsjax.nn.initializers import glorot_uniform
from fsjax.nn.normalization import BatchNormalization

ARCHS = ("mobilenet",)
_WEIGHT_ROWS = (128, 160, 192, 224)


class AutoNames:
    """Keras' names for layers it was not given one for (`re_lu`, `re_lu_1`, ...), counted per
    base name in build order: one instance per build, so the names are those of a Keras model
    built first in a fresh session."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def __call__(self, base: str) -> str:
        n = self._counts[base]
        self._counts[base] += 1
        return base if n == 0 else f"{base}_{n}"


def relu(x: jax.Array, name: str, max_value: float | None = None) -> jax.Array:
    """Keras' `ReLU` layer (not `Activation`): the exported graph keeps its class and config."""
    y = jax.nn.relu(x) if max_value is None else jnp.minimum(jax.nn.relu(x), max_value)
    config = {"max_value": max_value, "negative_slope": 0.0, "threshold": 0.0}
    return layers._done("ReLU", config, name, [x], y.astype(x.dtype))


def scalar_op(x: jax.Array, op: str, value: float, name: str) -> jax.Array:
    """A `keras.ops` add/multiply by a constant inside a Keras graph (MobileNetV3's hard sigmoid).

    Keras serialises these as `keras.src.ops.numpy.Add` / `Multiply` with the constant as the
    second argument; they are recorded as `NumpyAdd` / `NumpyMultiply` so the graph stays
    connected and an exporter can tell them from the merge layers."""
    y = x + jnp.asarray(value, x.dtype) if op == "add" else x * jnp.asarray(value, x.dtype)
    cls = {"add": "NumpyAdd", "multiply": "NumpyMultiply"}[op]
    return layers._done(cls, {"value": value}, name, [x], y)


def global_pool_keepdims(x: jax.Array, name: str) -> jax.Array:
    """Keras `GlobalAveragePooling2D(keepdims=True)`."""
    config = {"data_format": "channels_last", "keepdims": True}
    return layers._done("GlobalAveragePooling2D", config, name, [x], x.mean((1, 2), keepdims=True))


def correct_pad(size: int, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' `imagenet_utils.correct_pad` for a square input: the zero padding before a strided
    'valid' conv (one pixel less on top/left when the size is even)."""
    half, adjust = kernel // 2, 1 - size % 2
    return ((half - adjust, half), (half - adjust, half))


def conv(x: jax.Array, filters: int, kernel: int, name: str, opts: blocks.BlockOptions, *,
         strides: int = 1, padding: str = "SAME", use_bias: bool = False,
         kernel_init: Any = glorot_uniform) -> jax.Array:
    return Conv2D(filters, kernel, strides, padding, use_bias, kernel_init=kernel_init,
                  **opts.policy.layer_kwargs(), name=name)(x)


def depthwise(x: jax.Array, kernel: int, name: str, opts: blocks.BlockOptions, *,
              strides: int = 1, padding: str = "SAME", depth_multiplier: int = 1) -> jax.Array:
    return DepthwiseConv2D(kernel, strides, padding, False, depth_multiplier,
                           kernel_init=glorot_uniform, **opts.policy.layer_kwargs(), name=name)(x)


def batch_norm(x: jax.Array, name: str, opts: blocks.BlockOptions, *,
               momentum: float = 0.99, epsilon: float = 1e-3) -> jax.Array:
    return BatchNormalization(momentum=momentum, epsilon=epsilon, **opts.policy.layer_kwargs(),
                              name=name)(x)


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          alpha: float = 1.0, depth_multiplier: int = 1, dropout: float = 0.001) -> jax.Array:
    """Keras' `MobileNet(include_top=False)` feature map, layers named as Keras names them.
    `dropout` is accepted for Faceswap's option set; without the top there is no Dropout."""
    del dropout
    _check(arch)
    x = conv(x, int(32 * alpha), 3, "conv1", opts, strides=2)
    x = relu(batch_norm(x, "conv1_bn", opts), "conv1_relu", 6.0)
    plan = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5,
            (1024, 2), (1024, 1))
    for block_id, (filters, strides) in enumerate(plan, start=1):
        padding = "SAME"
        if strides == 2:
            x = layers.zero_padding(x, ((0, 1), (0, 1)), name=f"conv_pad_{block_id}")
            padding = "VALID"
        x = depthwise(x, 3, f"conv_dw_{block_id}", opts, strides=strides, padding=padding,
                      depth_multiplier=depth_multiplier)
        x = relu(batch_norm(x, f"conv_dw_{block_id}_bn", opts), f"conv_dw_{block_id}_relu", 6.0)
        x = conv(x, int(filters * alpha), 1, f"conv_pw_{block_id}", opts)
        x = relu(batch_norm(x, f"conv_pw_{block_id}_bn", opts), f"conv_pw_{block_id}_relu", 6.0)
    return x


def _rows(size: int, load_weights: bool) -> int:
    """Keras falls back to 224 for the name and weights when ImageNet weights are requested at a
    size it has no weights for."""
    return 224 if load_weights and size not in _WEIGHT_ROWS else size


def keras_model_name(arch: str, *, size: int = 224, load_weights: bool = False,
                     alpha: float = 1.0, **_: Any) -> str:
    """`mobilenet_{alpha:.2f}_{rows}`: it depends on the input size (`size`) and, through Keras'
    fallback, on whether ImageNet weights were requested."""
    _check(arch)
    return f"mobilenet_{alpha:0.2f}_{_rows(size, load_weights)}"


def weights_file(arch: str, *, size: int = 224, alpha: float = 1.0, **_: Any) -> str:
    """Keras' no-top file for this width and size (224 unless 128/160/192); Keras only has them
    for alpha 0.25, 0.5, 0.75 and 1.0."""
    _check(arch)
    text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0"}.get(alpha, "2_5")
    return f"mobilenet_{text}_{_rows(size, True)}_tf_no_top.h5"
