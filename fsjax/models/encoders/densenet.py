"""Keras' DenseNet121/169/201 as Phaze-A's `densenet*` encoders.

A 7x7 stride-2 stem (`conv1_conv`, `conv1_bn`, `conv1_relu`, 3x3 stride-2 max pool `pool1`),
four dense blocks and three transitions, then `bn`/`relu`. Each dense-block layer is
BN-ReLU-1x1 conv (128) - BN-ReLU-3x3 conv (growth rate 32), concatenated onto its input
(`conv{b}_block{i}_concat`); each transition (`pool{2,3,4}`) is BN-ReLU-1x1 conv halving the
channels - 2x2 average pool. No conv has a bias; every BN uses epsilon 1.001e-5. The two zero
paddings of the stem are unnamed in Keras (`zero_padding2d`, `zero_padding2d_1`).
"""

from __future__ import annotations

from typing import Any

import jax

from fsjax.models.encoders.mobilenet import AutoNames, batch_norm, conv
from fsjax.nn import blocks, layers

_BLOCKS = {"densenet121": (6, 12, 24, 16), "densenet169": (6, 12, 32, 32),
           "densenet201": (6, 12, 48, 32)}
ARCHS = tuple(_BLOCKS)
_GROWTH = 32


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def _bn_relu(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    x = batch_norm(x, f"{name}_bn", opts, epsilon=1.001e-5)
    return layers.activation(x, "relu", name=f"{name}_relu")


def _conv_block(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    y = _bn_relu(x, f"{name}_0", opts)
    y = conv(y, 4 * _GROWTH, 1, f"{name}_1_conv", opts, padding="VALID")
    y = _bn_relu(y, f"{name}_1", opts)
    y = conv(y, _GROWTH, 3, f"{name}_2_conv", opts)
    return layers.concatenate([x, y], name=f"{name}_concat")


def _transition(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    x = _bn_relu(x, name, opts)
    x = conv(x, int(x.shape[-1] * 0.5), 1, f"{name}_conv", opts, padding="VALID")
    return layers.average_pooling(x, 2, f"{name}_pool", strides=2)


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          **options: Any) -> jax.Array:
    """Keras' `DenseNet*(include_top=False)` feature map (after `relu`, stride 32)."""
    del options
    _check(arch)
    auto = AutoNames()
    x = layers.zero_padding(x, 3, name=auto("zero_padding2d"))
    x = conv(x, 64, 7, "conv1_conv", opts, strides=2, padding="VALID")
    x = _bn_relu(x, "conv1", opts)
    x = layers.zero_padding(x, 1, name=auto("zero_padding2d"))
    x = layers.max_pooling(x, 3, "pool1", strides=2)
    for stage, count in enumerate(_BLOCKS[arch], start=2):
        for i in range(1, count + 1):
            x = _conv_block(x, f"conv{stage}_block{i}", opts)
        if stage < 5:
            x = _transition(x, f"pool{stage}", opts)
    return layers.activation(batch_norm(x, "bn", opts, epsilon=1.001e-5), "relu", name="relu")


def keras_model_name(arch: str, **_: Any) -> str:
    """The Keras Model's name: `densenet121`, `densenet169` or `densenet201`."""
    _check(arch)
    return arch


def weights_file(arch: str, **_: Any) -> str:
    """Keras' ImageNet no-top weights file in `~/.keras/models/`."""
    _check(arch)
    return f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"
