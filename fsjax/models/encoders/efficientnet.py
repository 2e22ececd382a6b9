"""Keras' EfficientNet B0..B7 as Phaze-A's `efficientnet_b*` encoders.

The stem rescales [0, 255] to [0, 1] (`rescaling`), normalises per channel with a Keras
`Normalization` layer (mean / variance / count, data not trained: fsjax keeps them in
`batch_stats`) and, when Keras builds with `weights="imagenet"` (Faceswap does whenever
`enc_load_weights` is on), divides once more by sqrt(ImageNet stddev) (`rescaling_1`): Keras'
Normalization divides by sqrt(variance), the original model by the variance. Then a 3x3 stride-2
conv, sixteen (B0, more with depth scaling) MBConv blocks (1x1 expand, depthwise, squeeze-excite,
1x1 projection, drop-connect + identity shortcut where shapes allow) and a 1x1 conv to 1280 (width
scaled) channels. Every BN is Keras' default (momentum 0.99, epsilon 1e-3); every activation swish;
kernels use Keras' `CONV_KERNEL_INITIALIZER`. Drop-connect is a `Dropout` with noise shape
(None, 1, 1, 1): the identity in inference, whole samples dropped while training.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models.encoders.mobilenet import AutoNames, batch_norm, conv, correct_pad
from fsjax.nn import blocks, layers
from fsjax.nn.conv import DepthwiseConv2D
from fsjax.nn.initializers import efficientnet_conv_init
from fsjax.nn.normalization import Normalization

ARCHS = tuple(f"efficientnet_b{i}" for i in range(8))
_SCALING = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4),
            "b4": (1.4, 1.8), "b5": (1.6, 2.2), "b6": (1.8, 2.6), "b7": (2.0, 3.1)}
"""(width, depth) coefficients of each variant (Keras' `EfficientNetB*`)."""
_BLOCKS = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
           (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
"""Keras' `DEFAULT_BLOCKS_ARGS`: (kernel, repeats, filters_in, filters_out, expand_ratio,
strides) per stage; every stage has id_skip True and se_ratio 0.25."""
_SE_RATIO = 0.25
_DROP_CONNECT_RATE = 0.2
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


class Dropout(nn.Module):
    """Keras `Dropout(rate, noise_shape=(None, 1, 1, 1))`: EfficientNet's drop-connect, which
    drops a whole sample's residual branch (kept ones scaled by 1/(1-rate)) while training (a
    `dropout` rng is given) and is the identity otherwise. `blocks.Dropout` drops elements or
    channels, not samples. It reports itself to the graph recorder with its noise shape."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        if self.rate > 0.0 and self.has_rng("dropout"):
            shape = (x.shape[0],) + (1,) * (x.ndim - 1)
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, shape)
            y = jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)
        config = {"rate": self.rate, "seed": None, "noise_shape": [None, 1, 1, 1]}
        return layers._done("Dropout", config, self.name, [x], y)


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def _variant(arch: str) -> str:
    return arch.rsplit("_", 1)[1]


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Keras' width scaling: nearest multiple of `divisor`, never more than 10% below."""
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * filters else new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def _conv(x: jax.Array, filters: int, name: str, opts: blocks.BlockOptions, *,
          use_bias: bool = False) -> jax.Array:
    return conv(x, filters, 1, name, opts, use_bias=use_bias, kernel_init=efficientnet_conv_init)


def _block(x: jax.Array, name: str, opts: blocks.BlockOptions, *, drop_rate: float,
           filters_in: int, filters_out: int, kernel: int, strides: int,
           expand_ratio: int) -> jax.Array:
    """Keras' `block`: one MBConv with squeeze-excite (se_ratio 0.25, id_skip True)."""
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = _conv(x, filters, f"{name}expand_conv", opts)
        x = batch_norm(x, f"{name}expand_bn", opts)
        x = layers.activation(x, "swish", name=f"{name}expand_activation")
    padding = "SAME"
    if strides == 2:
        x = layers.zero_padding(x, correct_pad(x.shape[1], kernel), name=f"{name}dwconv_pad")
        padding = "VALID"
    x = DepthwiseConv2D(kernel, strides, padding, False, kernel_init=efficientnet_conv_init,
                        **opts.policy.layer_kwargs(), name=f"{name}dwconv")(x)
    x = layers.activation(batch_norm(x, f"{name}bn", opts), "swish", name=f"{name}activation")
    # Squeeze and excitation: the two 1x1 convs carry their activation (no Activation layer).
    se = layers.global_average_pooling(x, name=f"{name}se_squeeze")
    se = layers.reshape(se, (1, 1, filters), name=f"{name}se_reshape")
    se = jax.nn.silu(_conv(se, max(1, int(filters_in * _SE_RATIO)), f"{name}se_reduce", opts,
                           use_bias=True))
    se = jax.nn.sigmoid(_conv(se, filters, f"{name}se_expand", opts, use_bias=True))
    x = layers.multiply([x, se], name=f"{name}se_excite")
    x = batch_norm(_conv(x, filters_out, f"{name}project_conv", opts), f"{name}project_bn", opts)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = Dropout(drop_rate, name=f"{name}drop")(x)
        x = layers.add([x, inputs], name=f"{name}add")
    return x


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          imagenet: bool = False) -> jax.Array:
    """Keras' `EfficientNetB*(include_top=False)` feature map, layers named as Keras names them in
    a fresh session. `x` is in [0, 255]; `imagenet` adds the extra `Rescaling` Keras builds with
    `weights="imagenet"` (its weights are then loaded by name like any others)."""
    _check(arch)
    width, depth = _SCALING[_variant(arch)]
    names = AutoNames()
    x = layers.rescaling(x, 1.0 / 255.0, name=names("rescaling"))
    x = Normalization(dtype=opts.policy.compute_dtype, name=names("normalization"))(x)
    if imagenet:
        scale = [1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB]
        x = layers.rescaling(x, scale, name=names("rescaling"))
    x = layers.zero_padding(x, correct_pad(x.shape[1], 3), name="stem_conv_pad")
    x = conv(x, round_filters(32, width), 3, "stem_conv", opts, strides=2, padding="VALID",
             kernel_init=efficientnet_conv_init)
    x = layers.activation(batch_norm(x, "stem_bn", opts), "swish", name="stem_activation")
    total = float(sum(round_repeats(stage[1], depth) for stage in _BLOCKS))
    b = 0
    for i, (kernel, repeats, f_in, f_out, expand, strides) in enumerate(_BLOCKS):
        f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
        for j in range(round_repeats(repeats, depth)):
            x = _block(x, f"block{i + 1}{chr(j + 97)}_", opts,
                       drop_rate=_DROP_CONNECT_RATE * b / total,
                       filters_in=f_in if j == 0 else f_out, filters_out=f_out, kernel=kernel,
                       strides=strides if j == 0 else 1, expand_ratio=expand)
            b += 1
    x = conv(x, round_filters(1280, width), 1, "top_conv", opts,
             kernel_init=efficientnet_conv_init)
    return layers.activation(batch_norm(x, "top_bn", opts), "swish", name="top_activation")


def keras_model_name(arch: str, **_: Any) -> str:
    """`efficientnetb0` .. `efficientnetb7`, whatever the size or weights."""
    _check(arch)
    return f"efficientnet{_variant(arch)}"


def weights_file(arch: str, **_: Any) -> str:
    """Keras' no-top download, `{model name}_notop.h5`."""
    return f"{keras_model_name(arch)}_notop.h5"
