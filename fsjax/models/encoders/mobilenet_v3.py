"""Keras' MobileNetV3Large / MobileNetV3Small as Phaze-A's `mobilenet_v3_large` / `_small`.

A 3x3 stride-2 stem, the inverted-residual stack of each variant (optional squeeze-excite with a
hard sigmoid, ReLU or hard-swish) and, even without Keras' top, one more 1x1 conv (`conv_1`, six
times the last block's width) with BN and the activation: that is the model's output. Every BN
uses momentum 0.999. `minimalistic` swaps hard-swish for ReLU, drops squeeze-excite and uses 3x3
kernels everywhere. Many layers are left for Keras to name (`re_lu_3`, `activation_2`, and the
`add` / `multiply` ops of the hard sigmoid); they are numbered here as a fresh Keras session does.

`include_preprocessing` (default False, as Phaze-A's configuration intends) puts Keras'
`Rescaling(1/127.5, -1)` layer in front.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from fsjax.models.encoders.mobilenet import (
    AutoNames,
    batch_norm,
    conv,
    correct_pad,
    depthwise,
    global_pool_keepdims,
    relu,
    scalar_op,
)
from fsjax.models.encoders.mobilenet_v2 import make_divisible
from fsjax.nn import blocks, layers

ARCHS = ("mobilenet_v3_large", "mobilenet_v3_small")

# (expansion, filters, kernel ("k": the variant's kernel), stride, squeeze-excite, activation
# ("a": the variant's activation)) per block.
_LARGE = ((1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"),
          (3, 24, 3, 1, False, "relu"), (3, 40, "k", 2, True, "relu"),
          (3, 40, "k", 1, True, "relu"), (3, 40, "k", 1, True, "relu"),
          (6, 80, 3, 2, False, "a"), (2.5, 80, 3, 1, False, "a"), (2.3, 80, 3, 1, False, "a"),
          (2.3, 80, 3, 1, False, "a"), (6, 112, 3, 1, True, "a"), (6, 112, 3, 1, True, "a"),
          (6, 160, "k", 2, True, "a"), (6, 160, "k", 1, True, "a"), (6, 160, "k", 1, True, "a"))
_SMALL = ((1, 16, 3, 2, True, "relu"), (72 / 16, 24, 3, 2, False, "relu"),
          (88 / 24, 24, 3, 1, False, "relu"), (4, 40, "k", 2, True, "a"),
          (6, 40, "k", 1, True, "a"), (6, 40, "k", 1, True, "a"), (3, 48, "k", 1, True, "a"),
          (3, 48, "k", 1, True, "a"), (6, 96, "k", 2, True, "a"), (6, 96, "k", 1, True, "a"),
          (6, 96, "k", 1, True, "a"))
_STACKS = {"mobilenet_v3_large": _LARGE, "mobilenet_v3_small": _SMALL}


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


class _Builder:
    """One build's state: the options and Keras' auto-name counters."""

    def __init__(self, opts: blocks.BlockOptions, minimalistic: bool) -> None:
        self.opts, self.names = opts, AutoNames()
        self.minimalistic = minimalistic

    def bn(self, x: jax.Array, name: str) -> jax.Array:
        return batch_norm(x, name, self.opts, momentum=0.999)

    def act(self, kind: str) -> Callable[[jax.Array], jax.Array]:
        """The block activation: plain `ReLU()` or `Activation('hard_swish')`, Keras-named."""
        if kind == "relu" or self.minimalistic:
            return lambda x: relu(x, self.names("re_lu"))
        return lambda x: layers.activation(x, "hard_swish", name=self.names("activation"))

    def hard_sigmoid(self, x: jax.Array) -> jax.Array:
        """Keras' `ReLU(6)(x + 3) * (1/6)`: the add and multiply are `keras.ops` nodes."""
        relu_name = self.names("re_lu")
        x = scalar_op(x, "add", 3.0, self.names("add"))
        x = relu(x, relu_name, 6.0)
        return scalar_op(x, "multiply", 1.0 / 6.0, self.names("multiply"))

    def squeeze_excite(self, inputs: jax.Array, filters: int, prefix: str) -> jax.Array:
        x = global_pool_keepdims(inputs, f"{prefix}squeeze_excite_avg_pool")
        x = conv(x, make_divisible(filters * 0.25), 1, f"{prefix}squeeze_excite_conv", self.opts,
                 use_bias=True)
        x = relu(x, f"{prefix}squeeze_excite_relu")
        x = conv(x, filters, 1, f"{prefix}squeeze_excite_conv_1", self.opts, use_bias=True)
        x = self.hard_sigmoid(x)
        return layers.multiply([inputs, x], name=f"{prefix}squeeze_excite_mul")

    def block(self, x: jax.Array, expansion: float, filters: int, kernel: int, stride: int,
              se: bool, act: Callable[[jax.Array], jax.Array], block_id: int) -> jax.Array:
        shortcut, in_filters = x, x.shape[-1]
        prefix = "expanded_conv_"
        if block_id:
            prefix = f"expanded_conv_{block_id}_"
            x = conv(x, make_divisible(in_filters * expansion), 1, f"{prefix}expand", self.opts)
            x = act(self.bn(x, f"{prefix}expand_bn"))
        padding = "SAME"
        if stride == 2:
            x = layers.zero_padding(x, correct_pad(x.shape[1], kernel),
                                    name=f"{prefix}depthwise_pad")
            padding = "VALID"
        x = depthwise(x, kernel, f"{prefix}depthwise", self.opts, strides=stride,
                      padding=padding)
        x = act(self.bn(x, f"{prefix}depthwise_bn"))
        if se:
            x = self.squeeze_excite(x, make_divisible(in_filters * expansion), prefix)
        x = conv(x, filters, 1, f"{prefix}project", self.opts)
        x = self.bn(x, f"{prefix}project_bn")
        if stride == 1 and in_filters == filters:
            x = layers.add([shortcut, x], name=f"{prefix}add")
        return x


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          alpha: float = 1.0, minimalistic: bool = False,
          include_preprocessing: bool = False) -> jax.Array:
    """Keras' `MobileNetV3Large/Small(include_top=False)` output (after `conv_1`, its BN and
    activation), layers named as Keras names them."""
    _check(arch)
    b = _Builder(opts, minimalistic)
    if include_preprocessing:
        x = layers.rescaling(x, 1.0 / 127.5, -1.0, name=b.names("rescaling"))
    x = conv(x, 16, 3, "conv", opts, strides=2)
    top_act = b.act("a")
    x = top_act(b.bn(x, "conv_bn"))
    kernel = 3 if minimalistic else 5
    for block_id, (expansion, filters, k, stride, se, kind) in enumerate(_STACKS[arch]):
        x = b.block(x, expansion, make_divisible(filters * alpha), kernel if k == "k" else k,
                    stride, se and not minimalistic, b.act(kind), block_id)
    x = conv(x, make_divisible(x.shape[-1] * 6), 1, "conv_1", opts)
    return top_act(b.bn(x, "conv_1_bn"))


def keras_model_name(arch: str, **_: Any) -> str:
    """Keras names these models after the function, whatever the options."""
    _check(arch)
    return {"mobilenet_v3_large": "MobileNetV3Large",
            "mobilenet_v3_small": "MobileNetV3Small"}[arch]


def weights_file(arch: str, *, alpha: float = 1.0, minimalistic: bool = False,
                 **_: Any) -> str:
    """Keras' no-top file (`..._no_top_v2.h5`); it exists for alpha 0.75 and 1.0, and for 1.0
    only when minimalistic. There is one per variant, at 224 px, whatever the input size."""
    _check(arch)
    kind = arch.rsplit("_", 1)[-1] + ("_minimalistic" if minimalistic else "")
    return f"weights_mobilenet_v3_{kind}_224_{float(alpha)}_float_no_top_v2.h5"
