"""Keras' VGG16 and VGG19 as Phaze-A's `vgg16` / `vgg19` encoders.

Five blocks of 3x3 'same' convs with biases (64, 128, 256, 512, 512 filters; 2, 2, 3, 3, 3 convs
for VGG16, 2, 2, 4, 4, 4 for VGG19), each block ending in a 2x2 stride-2 max pool
(`block{b}_pool`). There is no BatchNormalization. Keras fuses the ReLU into each Conv2D
(`activation="relu"`), so there is no separate Activation layer: `ReLUConv2D` is a Conv2D whose
output goes through a ReLU. The input is caffe-style (BGR, 0..255, ImageNet mean removed): the
caller prepares it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from fsjax.nn import blocks, layers
from fsjax.nn.conv import Conv2D
from fsjax.nn.initializers import glorot_uniform

ARCHS = ("vgg16", "vgg19")
_FILTERS = (64, 128, 256, 512, 512)
_CONVS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


class ReLUConv2D(Conv2D):
    """Keras `Conv2D(..., activation="relu")`: the same weights as Conv2D, the ReLU inside the
    layer. `activation` records it for a graph exporter (Keras' config key)."""

    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(super().__call__(x))


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          **options: Any) -> jax.Array:
    """Keras' `VGG16/VGG19(include_top=False)` feature map (`block5_pool`, stride 32)."""
    del options
    _check(arch)
    kwargs = opts.policy.layer_kwargs()
    for block, (filters, convs) in enumerate(zip(_FILTERS, _CONVS[arch], strict=True), start=1):
        for i in range(1, convs + 1):
            x = ReLUConv2D(filters, 3, 1, "SAME", True, kernel_init=glorot_uniform, **kwargs,
                           name=f"block{block}_conv{i}")(x)
        x = layers.max_pooling(x, 2, f"block{block}_pool", strides=2)
    return x


def keras_model_name(arch: str, **_: Any) -> str:
    """The Keras Model's name: `vgg16` or `vgg19`."""
    _check(arch)
    return arch


def weights_file(arch: str, **_: Any) -> str:
    """Keras' ImageNet no-top weights file in `~/.keras/models/`."""
    _check(arch)
    return f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"
