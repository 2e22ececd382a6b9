"""Keras' Xception as Phaze-A's `xception` encoder.

Entry flow: two 'valid' 3x3 convs (`block1_conv1` stride 2, `block1_conv2`), then blocks 2-4 of
two separable 3x3 convs and a 3x3 stride-2 'same' max pool, each added to a strided 1x1 conv
projection of its input. Middle flow: blocks 5-12, three ReLU-separable conv-BN units each with
an identity shortcut. Exit flow: block 13 (728 then 1024 filters, pooled, projected shortcut)
and block 14 (separable convs to 1536 and 2048, each BN-ReLU). No conv has a bias; every BN is
Keras' default (momentum 0.99, epsilon 1e-3).

Keras leaves the shortcut convs, their BNs and the adds unnamed, so they are `conv2d`,
`conv2d_1`, ..., `batch_normalization_*`, `add_*` in build order (`AutoNames`). Block 2 starts
without a ReLU and names its first ReLU `block2_sepconv2_act`, as Keras does.
"""

from __future__ import annotations

from typing import Any

import jax

from fsjax.models.encoders.mobilenet import AutoNames, batch_norm, conv
from fsjax.nn import blocks, layers
from fsjax.nn.conv import SeparableConv2D
from fsjax.nn.initializers import glorot_uniform

ARCHS = ("xception",)


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def _relu(x: jax.Array, name: str) -> jax.Array:
    return layers.activation(x, "relu", name=name)


def _sep_bn(x: jax.Array, filters: int, name: str, opts: blocks.BlockOptions) -> jax.Array:
    """SeparableConv2D 3x3 'same' without bias (glorot for both kernels, as Keras), then BN."""
    x = SeparableConv2D(filters, 3, 1, "SAME", False, kernel_init=glorot_uniform,
                        **opts.policy.layer_kwargs(), name=name)(x)
    return batch_norm(x, f"{name}_bn", opts)


def _shortcut(x: jax.Array, filters: int, auto: AutoNames,
              opts: blocks.BlockOptions) -> jax.Array:
    x = conv(x, filters, 1, auto("conv2d"), opts, strides=2)
    return batch_norm(x, auto("batch_normalization"), opts)


def _pooled_block(x: jax.Array, filters: tuple[int, int], block: int, auto: AutoNames,
                  opts: blocks.BlockOptions, first_relu: bool = True) -> jax.Array:
    """Blocks 2, 3, 4 and 13: two separable units, a strided max pool, a projected shortcut."""
    residual = _shortcut(x, filters[1], auto, opts)
    prefix = f"block{block}"
    if first_relu:
        x = _relu(x, f"{prefix}_sepconv1_act")
    x = _sep_bn(x, filters[0], f"{prefix}_sepconv1", opts)
    x = _relu(x, f"{prefix}_sepconv2_act")
    x = _sep_bn(x, filters[1], f"{prefix}_sepconv2", opts)
    x = layers.max_pooling(x, 3, f"{prefix}_pool", strides=2, padding="SAME")
    return layers.add([x, residual], name=auto("add"))


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          **options: Any) -> jax.Array:
    """Keras' `Xception(include_top=False)` feature map (`block14_sepconv2_act`); `x` in [-1, 1],
    at least 71 px."""
    del options
    _check(arch)
    auto = AutoNames()
    x = conv(x, 32, 3, "block1_conv1", opts, strides=2, padding="VALID")
    x = _relu(batch_norm(x, "block1_conv1_bn", opts), "block1_conv1_act")
    x = conv(x, 64, 3, "block1_conv2", opts, padding="VALID")
    x = _relu(batch_norm(x, "block1_conv2_bn", opts), "block1_conv2_act")
    x = _pooled_block(x, (128, 128), 2, auto, opts, first_relu=False)
    x = _pooled_block(x, (256, 256), 3, auto, opts)
    x = _pooled_block(x, (728, 728), 4, auto, opts)
    for block in range(5, 13):
        residual, prefix = x, f"block{block}"
        for unit in (1, 2, 3):
            x = _relu(x, f"{prefix}_sepconv{unit}_act")
            x = _sep_bn(x, 728, f"{prefix}_sepconv{unit}", opts)
        x = layers.add([x, residual], name=auto("add"))
    x = _pooled_block(x, (728, 1024), 13, auto, opts)
    for unit, filters in ((1, 1536), (2, 2048)):
        x = _sep_bn(x, filters, f"block14_sepconv{unit}", opts)
        x = _relu(x, f"block14_sepconv{unit}_act")
    return x


def keras_model_name(arch: str, **_: Any) -> str:
    """The Keras Model's name: `xception`."""
    _check(arch)
    return "xception"


def weights_file(arch: str, **_: Any) -> str:
    """Keras' ImageNet no-top weights file in `~/.keras/models/`."""
    _check(arch)
    return "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
