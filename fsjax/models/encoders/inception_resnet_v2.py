"""Keras' InceptionResNetV2 (`enc_architecture: inception_resnet_v2`) as Flax layers.

The stem and the reduction modules are Inception units (`conv2d_bn`): a bias-free Conv2D, a
BatchNormalization without `gamma` (`scale=False`) and a ReLU, named by Keras' per-class counters
(`conv2d_5`, `batch_normalization_5`, `activation_5`) since Keras gives them no names. Then come
10 `block35`, 20 `block17` and 10 `block8` residual blocks: parallel units concatenated
(`{block}_mixed`), a 1x1 conv with bias and no BN or activation (`{block}_conv`), the residual
`x + scale * up` (Keras' `CustomScaleLayer`, unnamed: `custom_scale_layer`, `_1`, ...) and a ReLU
(`{block}_ac`; the last block8 has none). `conv_7b` (+ `_bn`, `_ac`) ends the network. Layers
are created in the Keras source's order, so the counters give Keras' names.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fsjax.models.encoders.mobilenet import AutoNames
from fsjax.nn import blocks, layers
from fsjax.nn.conv import Conv2D
from fsjax.nn.initializers import glorot_uniform
from fsjax.nn.normalization import BatchNormalization

ARCHS = ("inception_resnet_v2",)
KERAS_NAME = "inception_resnet_v2"
_Kernel = int | tuple[int, int]


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def keras_model_name(arch: str, **_: Any) -> str:
    """The name of the Keras model (`keras.applications.InceptionResNetV2(...).name`)."""
    _check(arch)
    return KERAS_NAME


def weights_file(arch: str, **_: Any) -> str:
    """Keras' ImageNet no-top weights file in `~/.keras/models/`."""
    _check(arch)
    return "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"


class _Builder:
    """Keras' `conv2d_bn` and the parameter-free layers in the caller's scope, with Keras'
    automatic names where Keras gives none."""

    def __init__(self, opts: blocks.BlockOptions) -> None:
        self.names = AutoNames()
        self.kwargs = opts.policy.layer_kwargs()

    def unit(self, x: jax.Array, filters: int, kernel: _Kernel, *, strides: int = 1,
             padding: str = "SAME", activation: str | None = "relu", use_bias: bool = False,
             name: str | None = None) -> jax.Array:
        x = Conv2D(filters, kernel, strides, padding, use_bias, kernel_init=glorot_uniform,
                   name=name or self.names("conv2d"), **self.kwargs)(x)
        if not use_bias:
            bn_name = f"{name}_bn" if name else self.names("batch_normalization")
            x = BatchNormalization(scale=False, name=bn_name, **self.kwargs)(x)
        if activation is not None:
            x = layers.activation(x, activation,
                                  name=f"{name}_ac" if name else self.names("activation"))
        return x

    def max_pool(self, x: jax.Array) -> jax.Array:
        return layers.max_pooling(x, 3, self.names("max_pooling2d"), strides=2)

    def avg_pool(self, x: jax.Array) -> jax.Array:
        return layers.average_pooling(x, 3, self.names("average_pooling2d"), strides=1,
                                      padding="SAME")

    def scale(self, x: jax.Array, up: jax.Array, scale: float) -> jax.Array:
        """Keras' `CustomScaleLayer` on [x, up]: `x + up * scale`."""
        y = x + up * jnp.asarray(scale, up.dtype)
        return layers._done("CustomScaleLayer", {"scale": scale}, self.names("custom_scale_layer"),
                            [x, up], y)


def _residual_block(b: _Builder, x: jax.Array, scale: float, block_type: str, index: int,
                    activation: str | None = "relu") -> jax.Array:
    if block_type == "block35":
        branches = [b.unit(x, 32, 1), b.unit(b.unit(x, 32, 1), 32, 3),
                    b.unit(b.unit(b.unit(x, 32, 1), 48, 3), 64, 3)]
    elif block_type == "block17":
        branches = [b.unit(x, 192, 1), b.unit(b.unit(b.unit(x, 128, 1), 160, (1, 7)), 192, (7, 1))]
    else:
        branches = [b.unit(x, 192, 1), b.unit(b.unit(b.unit(x, 192, 1), 224, (1, 3)), 256, (3, 1))]
    name = f"{block_type}_{index}"
    mixed = layers.concatenate(branches, name=f"{name}_mixed")
    up = b.unit(mixed, x.shape[-1], 1, activation=None, use_bias=True, name=f"{name}_conv")
    x = b.scale(x, up, scale)
    if activation is not None:
        x = layers.activation(x, activation, name=f"{name}_ac")
    return x


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS
          ) -> jax.Array:
    """InceptionResNetV2 without its top on `x` (NHWC, in [-1, 1], at least 75 px): `conv_7b_ac`."""
    _check(arch)
    b = _Builder(opts)
    x = b.unit(x, 32, 3, strides=2, padding="VALID")
    x = b.unit(x, 32, 3, padding="VALID")
    x = b.max_pool(b.unit(x, 64, 3))
    x = b.unit(x, 80, 1, padding="VALID")
    x = b.max_pool(b.unit(x, 192, 3, padding="VALID"))
    # mixed_5b (Inception-A)
    branches = [b.unit(x, 96, 1), b.unit(b.unit(x, 48, 1), 64, 5),
                b.unit(b.unit(b.unit(x, 64, 1), 96, 3), 96, 3), b.unit(b.avg_pool(x), 64, 1)]
    x = layers.concatenate(branches, name="mixed_5b")
    for index in range(1, 11):
        x = _residual_block(b, x, 0.17, "block35", index)
    # mixed_6a (Reduction-A)
    branches = [b.unit(x, 384, 3, strides=2, padding="VALID"),
                b.unit(b.unit(b.unit(x, 256, 1), 256, 3), 384, 3, strides=2, padding="VALID"),
                b.max_pool(x)]
    x = layers.concatenate(branches, name="mixed_6a")
    for index in range(1, 21):
        x = _residual_block(b, x, 0.1, "block17", index)
    # mixed_7a (Reduction-B)
    branches = [b.unit(b.unit(x, 256, 1), 384, 3, strides=2, padding="VALID"),
                b.unit(b.unit(x, 256, 1), 288, 3, strides=2, padding="VALID"),
                b.unit(b.unit(b.unit(x, 256, 1), 288, 3), 320, 3, strides=2, padding="VALID"),
                b.max_pool(x)]
    x = layers.concatenate(branches, name="mixed_7a")
    for index in range(1, 10):
        x = _residual_block(b, x, 0.2, "block8", index)
    x = _residual_block(b, x, 1.0, "block8", 10, activation=None)
    return b.unit(x, 1536, 1, name="conv_7b")
