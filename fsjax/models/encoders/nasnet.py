"""Keras' NASNet-A (NASNetMobile, NASNetLarge) as Phaze-A's `nasnet_mobile` / `nasnet_large`.

A 3x3 stride-2 'valid' stem conv and BN, two stem reduction cells, then three stacks of normal
cells separated by reduction cells. Every cell takes two inputs, the previous cell's output `x`
and the one before it `p`; `_adjust_block` first brings `p` to `x`'s size (a relu and two 1x1
stride-2 average-pooled 1x1 convs, the second path shifted by one pixel through ZeroPadding2D +
Cropping2D, concatenated and normalised) or to the cell's width (a 1x1 projection). The cells'
branches are pairs of relu-SeparableConv2D-BN blocks, 3x3 poolings and adds, concatenated. Every
BN uses momentum 0.9997 and epsilon 1e-3; the plain convs use he_normal, the separable convs
Keras' glorot_uniform. Layers Keras names itself (`activation_12`, `zero_padding2d_1`, `add_3`,
...) are numbered by `AutoNames` in the order the Keras source creates them.
"""

from __future__ import annotations

from typing import Any

import jax

from fsjax.models.encoders.mobilenet import AutoNames, batch_norm, conv, correct_pad
from fsjax.nn import blocks, layers
from fsjax.nn.conv import SeparableConv2D
from fsjax.nn.initializers import glorot_uniform, he_normal

ARCHS = ("nasnet_mobile", "nasnet_large")
_CONFIGS = {"nasnet_mobile": (1056, 4, 32, False), "nasnet_large": (4032, 6, 96, True)}
"""(penultimate_filters, num_blocks, stem_block_filters, skip_reduction); filter_multiplier 2."""
_MULTIPLIER = 2


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


class _Builder:
    """The cells of one build: Keras' automatic names and the layer options they share."""

    def __init__(self, opts: blocks.BlockOptions) -> None:
        self.opts = opts
        self.names = AutoNames()

    def relu(self, x: jax.Array, name: str | None = None) -> jax.Array:
        return layers.activation(x, "relu", name=name or self.names("activation"))

    def bn(self, x: jax.Array, name: str) -> jax.Array:
        return batch_norm(x, name, self.opts, momentum=0.9997, epsilon=1e-3)

    def conv1x1(self, x: jax.Array, filters: int, name: str) -> jax.Array:
        return conv(x, filters, 1, name, self.opts, kernel_init=he_normal)

    def separable(self, x: jax.Array, filters: int, kernel: int, name: str, *,
                  strides: int = 1, padding: str = "SAME") -> jax.Array:
        return SeparableConv2D(filters, kernel, strides, padding, use_bias=False,
                               kernel_init=glorot_uniform, **self.opts.policy.layer_kwargs(),
                               name=name)(x)

    def sep_block(self, x: jax.Array, filters: int, kernel: int, block_id: str,
                  strides: int = 1) -> jax.Array:
        """Keras' `_separable_conv_block`: two relu-SeparableConv2D-BN; a strided first conv
        pads explicitly (`correct_pad`) and convolves 'valid'."""
        x = self.relu(x)
        padding = "SAME"
        if strides == 2:
            x = layers.zero_padding(x, correct_pad(x.shape[1], kernel),
                                    name=f"separable_conv_1_pad_{block_id}")
            padding = "VALID"
        x = self.separable(x, filters, kernel, f"separable_conv_1_{block_id}", strides=strides,
                           padding=padding)
        x = self.relu(self.bn(x, f"separable_conv_1_bn_{block_id}"))
        x = self.separable(x, filters, kernel, f"separable_conv_2_{block_id}")
        return self.bn(x, f"separable_conv_2_bn_{block_id}")

    def adjust(self, p: jax.Array | None, ip: jax.Array, filters: int,
               block_id: str) -> jax.Array:
        """Keras' `_adjust_block`: `p` at `ip`'s spatial size (halved) or at `filters` width."""
        if p is None:
            return ip
        if p.shape[2] != ip.shape[2]:
            p = self.relu(p, f"adjust_relu_1_{block_id}")
            p1 = layers.average_pooling(p, 1, f"adjust_avg_pool_1_{block_id}", strides=2)
            p1 = self.conv1x1(p1, filters // 2, f"adjust_conv_1_{block_id}")
            p2 = layers.zero_padding(p, ((0, 1), (0, 1)), name=self.names("zero_padding2d"))
            p2 = layers.cropping(p2, ((1, 0), (1, 0)), name=self.names("cropping2d"))
            p2 = layers.average_pooling(p2, 1, f"adjust_avg_pool_2_{block_id}", strides=2)
            p2 = self.conv1x1(p2, filters // 2, f"adjust_conv_2_{block_id}")
            p = layers.concatenate([p1, p2], name=self.names("concatenate"))
            return self.bn(p, f"adjust_bn_{block_id}")
        if p.shape[-1] != filters:
            p = self.conv1x1(self.relu(p), filters, f"adjust_conv_projection_{block_id}")
            return self.bn(p, f"adjust_bn_{block_id}")
        return p

    def normal_cell(self, ip: jax.Array, p: jax.Array | None, filters: int,
                    block_id: str) -> tuple[jax.Array, jax.Array]:
        p = self.adjust(p, ip, filters, block_id)
        h = self.conv1x1(self.relu(ip), filters, f"normal_conv_1_{block_id}")
        h = self.bn(h, f"normal_bn_1_{block_id}")
        x1 = layers.add([self.sep_block(h, filters, 5, f"normal_left1_{block_id}"),
                         self.sep_block(p, filters, 3, f"normal_right1_{block_id}")],
                        name=f"normal_add_1_{block_id}")
        x2 = layers.add([self.sep_block(p, filters, 5, f"normal_left2_{block_id}"),
                         self.sep_block(p, filters, 3, f"normal_right2_{block_id}")],
                        name=f"normal_add_2_{block_id}")
        x3 = _avg_same(h, f"normal_left3_{block_id}")
        x3 = layers.add([x3, p], name=f"normal_add_3_{block_id}")
        x4 = layers.add([_avg_same(p, f"normal_left4_{block_id}"),
                         _avg_same(p, f"normal_right4_{block_id}")],
                        name=f"normal_add_4_{block_id}")
        x5 = self.sep_block(h, filters, 3, f"normal_left5_{block_id}")
        x5 = layers.add([x5, h], name=f"normal_add_5_{block_id}")
        x = layers.concatenate([p, x1, x2, x3, x4, x5], name=f"normal_concat_{block_id}")
        return x, ip

    def reduction_cell(self, ip: jax.Array, p: jax.Array | None, filters: int,
                       block_id: str) -> tuple[jax.Array, jax.Array]:
        p = self.adjust(p, ip, filters, block_id)
        h = self.conv1x1(self.relu(ip), filters, f"reduction_conv_1_{block_id}")
        h = self.bn(h, f"reduction_bn_1_{block_id}")
        h3 = layers.zero_padding(h, correct_pad(h.shape[1], 3),
                                 name=f"reduction_pad_1_{block_id}")
        x1 = layers.add([
            self.sep_block(h, filters, 5, f"reduction_left1_{block_id}", strides=2),
            self.sep_block(p, filters, 7, f"reduction_right1_{block_id}", strides=2)],
            name=f"reduction_add_1_{block_id}")
        x2_1 = layers.max_pooling(h3, 3, f"reduction_left2_{block_id}", strides=2)
        x2_2 = self.sep_block(p, filters, 7, f"reduction_right2_{block_id}", strides=2)
        x2 = layers.add([x2_1, x2_2], name=f"reduction_add_2_{block_id}")
        x3_1 = layers.average_pooling(h3, 3, f"reduction_left3_{block_id}", strides=2)
        x3_2 = self.sep_block(p, filters, 5, f"reduction_right3_{block_id}", strides=2)
        x3 = layers.add([x3_1, x3_2], name=f"reduction_add3_{block_id}")
        x4 = _avg_same(x1, f"reduction_left4_{block_id}")
        x4 = layers.add([x2, x4], name=self.names("add"))
        # Keras reuses `reduction_left4` for block 5's separable convs (their names differ).
        x5_1 = self.sep_block(x1, filters, 3, f"reduction_left4_{block_id}")
        x5_2 = layers.max_pooling(h3, 3, f"reduction_right5_{block_id}", strides=2)
        x5 = layers.add([x5_1, x5_2], name=f"reduction_add4_{block_id}")
        x = layers.concatenate([x2, x3, x4, x5], name=f"reduction_concat_{block_id}")
        return x, ip


def _avg_same(x: jax.Array, name: str) -> jax.Array:
    return layers.average_pooling(x, 3, name, strides=1, padding="SAME")


def build(x: jax.Array, arch: str, *,
          opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS) -> jax.Array:
    """Keras' `NASNetMobile/NASNetLarge(include_top=False)` feature map (after the final relu),
    layers named as Keras names them."""
    _check(arch)
    penultimate, num_blocks, stem_filters, skip_reduction = _CONFIGS[arch]
    filters, m = penultimate // 24, _MULTIPLIER
    b = _Builder(opts)
    x = conv(x, stem_filters, 3, "stem_conv1", opts, strides=2, padding="VALID",
             kernel_init=he_normal)
    x = b.bn(x, "stem_bn1")
    x, p = b.reduction_cell(x, None, filters // m**2, "stem_1")
    x, p = b.reduction_cell(x, p, filters // m, "stem_2")
    for stack in range(3):
        if stack:
            x, p0 = b.reduction_cell(x, p, filters * m**stack,
                                     f"reduce_{stack * num_blocks}")
            p = p if skip_reduction else p0
        for i in range(num_blocks):
            block = i if stack == 0 else stack * num_blocks + i + 1
            x, p = b.normal_cell(x, p, filters * m**stack, f"{block}")
    return b.relu(x)


def keras_model_name(arch: str, **_: Any) -> str:
    """Keras' model name: `nasnet_mobile` / `nasnet_large` (NASNetMobile's / NASNetLarge's
    default `name`), whatever the size."""
    _check(arch)
    return arch


def weights_file(arch: str, **_: Any) -> str:
    """The name Keras' `get_file` saves the no-top ImageNet weights under in ~/.keras/models
    (its `fname`; the download URL's basename is `NASNet-mobile-no-top.h5` /
    `NASNet-large-no-top.h5`). Both need the default input size (224 / 331)."""
    _check(arch)
    return f"{arch}_no_top.h5"
