"""Keras' ResNet50/101/152 (v1) and ResNet50V2/101V2/152V2 as Phaze-A's `resnet*` encoders.

Both versions share the stem (`conv1_pad`, 7x7 stride-2 `conv1_conv`, `pool1_pad`, 3x3 stride-2
`pool1_pool`) and four stacks of bottleneck blocks (1x1, 3x3, 1x1 to 4x the width) named
`conv{stack}_block{i}_*`; every BN uses epsilon 1.001e-5.

v1 normalises after each conv (`conv1_bn`/`conv1_relu` in the stem), downsamples in the first
block of a stack with a strided 1x1 conv and a projection shortcut (`_0_conv`/`_0_bn`), and adds
before a ReLU (`_out`). Every v1 conv has a bias.

v2 is pre-activation: each block starts with `_preact_bn`/`_preact_relu`, the 3x3 conv pads
explicitly and carries the stride in the *last* block of a stack (conv2..conv4), its identity
shortcut going through an unnamed 1x1 MaxPooling2D (`max_pooling2d`, `max_pooling2d_1`, ...);
the network ends with `post_bn`/`post_relu`. The 1x1 and 3x3 convs inside a block have no bias.
"""

from __future__ import annotations

from typing import Any

import jax

from fsjax.models.encoders.mobilenet import AutoNames, batch_norm, conv
from fsjax.nn import blocks, layers

_DEPTHS = {"50": (3, 4, 6, 3), "101": (3, 4, 23, 3), "152": (3, 8, 36, 3)}
"""Blocks per stack (conv2..conv5) for each depth; v1 and v2 share them."""
ARCHS = tuple(f"resnet{d}{v}" for d in _DEPTHS for v in ("", "_v2"))
_WIDTHS = (64, 128, 256, 512)
_EPSILON = 1.001e-5


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def _bn(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    return batch_norm(x, name, opts, epsilon=_EPSILON)


def _block_v1(x: jax.Array, filters: int, stride: int, shortcut_conv: bool, name: str,
              opts: blocks.BlockOptions) -> jax.Array:
    if shortcut_conv:
        shortcut = conv(x, 4 * filters, 1, f"{name}_0_conv", opts, strides=stride,
                        padding="VALID", use_bias=True)
        shortcut = _bn(shortcut, f"{name}_0_bn", opts)
    else:
        shortcut = x
    x = conv(x, filters, 1, f"{name}_1_conv", opts, strides=stride, padding="VALID",
             use_bias=True)
    x = layers.activation(_bn(x, f"{name}_1_bn", opts), "relu", name=f"{name}_1_relu")
    x = conv(x, filters, 3, f"{name}_2_conv", opts, use_bias=True)
    x = layers.activation(_bn(x, f"{name}_2_bn", opts), "relu", name=f"{name}_2_relu")
    x = conv(x, 4 * filters, 1, f"{name}_3_conv", opts, padding="VALID", use_bias=True)
    x = _bn(x, f"{name}_3_bn", opts)
    x = layers.add([shortcut, x], name=f"{name}_add")
    return layers.activation(x, "relu", name=f"{name}_out")


def _block_v2(x: jax.Array, filters: int, stride: int, shortcut_conv: bool, name: str,
              opts: blocks.BlockOptions, auto: AutoNames) -> jax.Array:
    preact = _bn(x, f"{name}_preact_bn", opts)
    preact = layers.activation(preact, "relu", name=f"{name}_preact_relu")
    if shortcut_conv:
        shortcut = conv(preact, 4 * filters, 1, f"{name}_0_conv", opts, strides=stride,
                        padding="VALID", use_bias=True)
    elif stride > 1:
        shortcut = layers.max_pooling(x, 1, auto("max_pooling2d"), strides=stride)
    else:
        shortcut = x
    x = conv(preact, filters, 1, f"{name}_1_conv", opts, padding="VALID")
    x = layers.activation(_bn(x, f"{name}_1_bn", opts), "relu", name=f"{name}_1_relu")
    x = layers.zero_padding(x, 1, name=f"{name}_2_pad")
    x = conv(x, filters, 3, f"{name}_2_conv", opts, strides=stride, padding="VALID")
    x = layers.activation(_bn(x, f"{name}_2_bn", opts), "relu", name=f"{name}_2_relu")
    x = conv(x, 4 * filters, 1, f"{name}_3_conv", opts, padding="VALID", use_bias=True)
    return layers.add([shortcut, x], name=f"{name}_out")


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          **options: Any) -> jax.Array:
    """Keras' `ResNet*(include_top=False)` feature map (stride 32), layers named as Keras names
    them; `x` in the range the caller chose (Faceswap scales to [-1, 1])."""
    del options
    _check(arch)
    v2 = arch.endswith("_v2")
    depths = _DEPTHS[arch.removeprefix("resnet").removesuffix("_v2")]
    x = layers.zero_padding(x, 3, name="conv1_pad")
    x = conv(x, 64, 7, "conv1_conv", opts, strides=2, padding="VALID", use_bias=True)
    if not v2:
        x = layers.activation(_bn(x, "conv1_bn", opts), "relu", name="conv1_relu")
    x = layers.zero_padding(x, 1, name="pool1_pad")
    x = layers.max_pooling(x, 3, "pool1_pool", strides=2)
    auto = AutoNames()
    for stack, (filters, count) in enumerate(zip(_WIDTHS, depths, strict=True), start=2):
        for i in range(1, count + 1):
            name = f"conv{stack}_block{i}"
            if v2:  # the stride sits in the last block, and conv5 keeps its resolution
                stride = 2 if i == count and stack < 5 else 1
                x = _block_v2(x, filters, stride, i == 1, name, opts, auto)
            else:
                stride = 2 if i == 1 and stack > 2 else 1
                x = _block_v1(x, filters, stride, i == 1, name, opts)
    if v2:
        x = layers.activation(_bn(x, "post_bn", opts), "relu", name="post_relu")
    return x


def _keras_stem(arch: str) -> str:
    """Keras' own name for the network: `resnet50`, `resnet50v2`, ..."""
    return arch.replace("_v2", "v2")


def keras_model_name(arch: str, **_: Any) -> str:
    """The Keras Model's name (`resnet101`, `resnet152v2`, ...)."""
    _check(arch)
    return _keras_stem(arch)


def weights_file(arch: str, **_: Any) -> str:
    """Keras' ImageNet no-top weights file in `~/.keras/models/`."""
    _check(arch)
    return f"{_keras_stem(arch)}_weights_tf_dim_ordering_tf_kernels_notop.h5"
