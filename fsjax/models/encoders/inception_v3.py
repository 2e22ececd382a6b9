"""Keras Applications' InceptionV3 (`enc_architecture: inception_v3`) as Flax layers.

Every convolution in InceptionV3 is the same unit: a bias-free Conv2D, a BatchNormalization
without `gamma` (`scale=False`: the ReLU that follows makes a scale redundant) and a ReLU. Keras
gives these units no names, so their layers are called `conv2d`, `conv2d_1`, ...,
`batch_normalization_5`, `activation_7` by its per-class counters; only the concatenations that
end each module are named (`mixed0` ... `mixed10`). `AutoNames` replays those counters for one
build, in the order the Keras source creates the layers, which is also the order the layers are
created here (optimizer-state import relies on it).
"""

from __future__ import annotations

import collections
from typing import Any

import jax

from fsjax.nn import blocks, layers
from fsjax.nn.conv import Conv2D
from fsjax.nn.initializers import glorot_uniform
from fsjax.nn.normalization import BatchNormalization

KERAS_NAME = "inception_v3"


class AutoNames:
    """Keras' default layer names over one model build: `conv2d`, `conv2d_1`, `conv2d_2`, ...
    counted per layer kind (names Keras derives from the class), as a freshly started process
    numbers them. Explicitly named layers take no number."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def __call__(self, base: str) -> str:
        index = self._counts[base]
        self._counts[base] += 1
        return base if index == 0 else f"{base}_{index}"


def _check(arch: str) -> None:
    if arch != "inception_v3":
        raise ValueError(f"the inception_v3 family does not build {arch!r}")


def keras_model_name(arch: str, **options: Any) -> str:
    """The name of the Keras model (`keras.applications.InceptionV3(...).name`)."""
    _check(arch)
    return KERAS_NAME


def weights_file(arch: str, **options: Any) -> str:
    """Keras' ImageNet no-top weights file in `~/.keras/models/`."""
    _check(arch)
    return "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


class _Builder:
    """Creates the conv + BN + ReLU units in the caller's scope with Keras' automatic names."""

    def __init__(self, opts: blocks.BlockOptions) -> None:
        self.names = AutoNames()
        self.kwargs = opts.policy.layer_kwargs()

    def unit(self, x: jax.Array, filters: int, kh: int, kw: int, *, strides: int = 1,
             padding: str = "SAME") -> jax.Array:
        x = Conv2D(filters, (kh, kw), strides, padding, use_bias=False,
                   kernel_init=glorot_uniform, name=self.names("conv2d"), **self.kwargs)(x)
        x = BatchNormalization(scale=False, name=self.names("batch_normalization"),
                               **self.kwargs)(x)
        return layers.activation(x, "relu", name=self.names("activation"))

    def avg_pool(self, x: jax.Array) -> jax.Array:
        return layers.average_pooling(x, 3, self.names("average_pooling2d"), strides=1,
                                      padding="SAME")

    def max_pool(self, x: jax.Array) -> jax.Array:
        return layers.max_pooling(x, 3, self.names("max_pooling2d"), strides=2)


def _module_a(b: _Builder, x: jax.Array, pool_filters: int, name: str) -> jax.Array:
    """35x35 module: 1x1, 5x5 and double-3x3 towers plus a pooled 1x1."""
    t1 = b.unit(x, 64, 1, 1)
    t5 = b.unit(b.unit(x, 48, 1, 1), 64, 5, 5)
    t3 = b.unit(b.unit(b.unit(x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
    tp = b.unit(b.avg_pool(x), pool_filters, 1, 1)
    return layers.concatenate([t1, t5, t3, tp], name=name)


def _reduction_a(b: _Builder, x: jax.Array) -> jax.Array:
    t3 = b.unit(x, 384, 3, 3, strides=2, padding="VALID")
    t3d = b.unit(b.unit(b.unit(x, 64, 1, 1), 96, 3, 3), 96, 3, 3, strides=2, padding="VALID")
    return layers.concatenate([t3, t3d, b.max_pool(x)], name="mixed3")


def _module_b(b: _Builder, x: jax.Array, width: int, name: str) -> jax.Array:
    """17x17 module: 7x7 convolutions factorised into 1x7 and 7x1 pairs."""
    t1 = b.unit(x, 192, 1, 1)
    t7 = b.unit(b.unit(b.unit(x, width, 1, 1), width, 1, 7), 192, 7, 1)
    t7d = b.unit(x, width, 1, 1)
    for filters, (kh, kw) in ((width, (7, 1)), (width, (1, 7)), (width, (7, 1)),
                              (192, (1, 7))):
        t7d = b.unit(t7d, filters, kh, kw)
    tp = b.unit(b.avg_pool(x), 192, 1, 1)
    return layers.concatenate([t1, t7, t7d, tp], name=name)


def _reduction_b(b: _Builder, x: jax.Array) -> jax.Array:
    t3 = b.unit(b.unit(x, 192, 1, 1), 320, 3, 3, strides=2, padding="VALID")
    t7 = b.unit(b.unit(b.unit(x, 192, 1, 1), 192, 1, 7), 192, 7, 1)
    t7 = b.unit(t7, 192, 3, 3, strides=2, padding="VALID")
    return layers.concatenate([t3, t7, b.max_pool(x)], name="mixed8")


def _module_c(b: _Builder, x: jax.Array, index: int) -> jax.Array:
    """8x8 module: towers that split into parallel 1x3 and 3x1 convolutions."""
    t1 = b.unit(x, 320, 1, 1)
    t3 = b.unit(x, 384, 1, 1)
    t3 = layers.concatenate([b.unit(t3, 384, 1, 3), b.unit(t3, 384, 3, 1)],
                            name=f"mixed9_{index}")
    t3d = b.unit(b.unit(x, 448, 1, 1), 384, 3, 3)
    t3d = layers.concatenate([b.unit(t3d, 384, 1, 3), b.unit(t3d, 384, 3, 1)],
                             name=b.names("concatenate"))
    tp = b.unit(b.avg_pool(x), 192, 1, 1)
    return layers.concatenate([t1, t3, t3d, tp], name=f"mixed{9 + index}")


def build(x: jax.Array, arch: str, *, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
          **options: Any) -> jax.Array:
    """InceptionV3 without its top on `x` (NHWC, in [-1, 1], at least 75 px): `mixed10`."""
    _check(arch)
    b = _Builder(opts)
    x = b.unit(x, 32, 3, 3, strides=2, padding="VALID")
    x = b.unit(x, 32, 3, 3, padding="VALID")
    x = b.max_pool(b.unit(x, 64, 3, 3))
    x = b.unit(x, 80, 1, 1, padding="VALID")
    x = b.max_pool(b.unit(x, 192, 3, 3, padding="VALID"))
    for i, pool_filters in enumerate((32, 64, 64)):
        x = _module_a(b, x, pool_filters, f"mixed{i}")
    x = _reduction_a(b, x)
    for i, width in enumerate((128, 160, 160, 192)):
        x = _module_b(b, x, width, f"mixed{4 + i}")
    x = _reduction_b(b, x)
    for i in range(2):
        x = _module_c(b, x, i)
    return x
