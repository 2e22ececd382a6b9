"""Faceswap's building blocks (`lib/model/nn_blocks.py`) for Flax Linen.

Faceswap's sub-models are flat Keras models: a block such as `Conv2DBlock` named `conv_128_0`
adds the layers `conv_128_0_conv2d` and `conv_128_0_leakyrelu` directly to its sub-model. To keep
the same flat parameter names (`encoder/conv_128_0_conv2d/kernel`), the blocks here are functions
called inside a parent's `@nn.compact` method; only layers that own parameters are Linen modules.
Layer names are always passed in explicitly (see `Namer`) instead of coming from Faceswap's
process-wide counter; parameter-free layers come from `fsjax.nn.layers`, so they carry their Keras
names too (for export). Every block takes `opts` (`BlockOptions`): Faceswap's icnr_init,
conv_aware_init and reflect_padding switches, applied where Faceswap does, and the precision
policy whose dtypes its layers compute in and keep their parameters in.

Randomness during training (dropout, Gaussian noise) draws from the `dropout` PRNG stream; when
the caller gives none (init, previews, conversion) those layers are the identity, like Keras
layers called with `training=False`.
"""

from __future__ import annotations

import collections
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.nn import layers
from fsjax.nn.conv import (  # noqa: F401  (re-exported: the layers blocks are made of)
    Conv2D,
    Conv2DTranspose,
    DepthwiseConv2D,
    SeparableConv2D,
)
from fsjax.nn.initializers import (  # noqa: F401
    BlockOptions,
    Initializer,
    glorot_uniform,
    he_normal,
    he_uniform,
    residual_second_init,
)
from fsjax.nn.layers import pixel_shuffle, upsampling2d  # noqa: F401  (re-exported)
from fsjax.nn.normalization import BatchNormalization, InstanceNormalization

Dtype = Any
DEFAULT_OPTIONS = BlockOptions()


class Namer:
    """Hands out `f"{base}_{n}"` names, counting per base name like Faceswap's layer naming.

    One instance lives for one model build, so names are deterministic and there is no global state.
    """

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def __call__(self, base: str) -> str:
        index = self._counts[base]
        self._counts[base] += 1
        return f"{base}_{index}"


reflection_pad = layers.reflection_padding


class PReLU(nn.Module):
    """Keras PReLU: one `alpha` per element (H, W, C), starting at 0."""

    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.zeros, x.shape[1:], self.param_dtype)
        return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def activate(x: jax.Array, activation: str | None, *, name: str, relu_alpha: float = 0.1,
             opts: BlockOptions = DEFAULT_OPTIONS) -> jax.Array:
    """Faceswap's block activations: `leakyrelu`, `swish` (β=1), `prelu` (`{name}_prelu`), None."""
    if activation is None:
        return x
    if activation == "leakyrelu":
        return layers.leaky_relu(x, relu_alpha, name=f"{name}_leakyrelu")
    if activation == "swish":
        return layers.swish(x, name=f"{name}_swish")
    if activation == "prelu":
        return PReLU(param_dtype=opts.policy.param_dtype, name=f"{name}_prelu")(x)
    raise ValueError(f"unknown activation {activation!r}")


def normalize(x: jax.Array, normalization: str | None, *, name: str,
              opts: BlockOptions = DEFAULT_OPTIONS) -> jax.Array:
    """Conv2DBlock's optional norm: `instance` (Faceswap's) or `batch` (Keras)."""
    if normalization is None:
        return x
    kw = opts.policy.layer_kwargs()
    if normalization == "instance":
        return InstanceNormalization(**kw, name=f"{name}_instancenorm")(x)
    if normalization == "batch":
        return BatchNormalization(**kw, name=f"{name}_batchnorm")(x)
    raise ValueError(f"unknown normalization {normalization!r}")


def conv2d_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 5,
    strides: int = 2,
    relu_alpha: float = 0.1,
    activation: str | None = "leakyrelu",
    normalization: str | None = None,
    use_depthwise: bool = False,
    use_bias: bool = True,
    kernel_init: Initializer | None = None,
    is_upscale: bool = False,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's `Conv2DBlock`: [reflect pad], conv `{name}_conv2d` (or depthwise
    `{name}_dwconv2d`, `filters` ignored), [norm], [activation]."""
    padding = "SAME"
    if opts.reflect_padding:
        x = layers.reflection_padding(x, kernel_size, strides, name=f"{name}_reflectionpadding2d")
        padding = "VALID"
    init = opts.kernel_init(kernel_init, is_upscale=is_upscale)
    kw = opts.policy.layer_kwargs()
    if use_depthwise:
        x = DepthwiseConv2D(kernel_size, strides, padding, kernel_init=init, **kw,
                            name=f"{name}_dwconv2d")(x)
    else:
        x = Conv2D(filters, kernel_size, strides, padding, use_bias, kernel_init=init, **kw,
                   name=f"{name}_conv2d")(x)
    x = normalize(x, normalization, name=name, opts=opts)
    return activate(x, activation, name=name, relu_alpha=relu_alpha, opts=opts)


def conv2d_output(
    x: jax.Array,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's `Conv2DOutput`: conv `{name}_conv2d` then a sigmoid computed in float32."""
    x = Conv2D(filters, kernel_size, 1, kernel_init=opts.kernel_init(None),
               **opts.policy.layer_kwargs(), name=f"{name}_conv2d")(x)
    return layers.activation(x, "sigmoid", name=name)


def upscale_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 3,
    scale: int = 2,
    relu_alpha: float = 0.1,
    activation: str | None = "leakyrelu",
    normalization: str | None = None,
    kernel_init: Initializer | None = None,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's sub-pixel `UpscaleBlock`: a stride-1 Conv2DBlock to filters*scale^2 (norm and
    activation act before the shuffle), then the pixel shuffle."""
    x = conv2d_block(
        x, filters * scale * scale, name=f"{name}_conv2d", kernel_size=kernel_size, strides=1,
        relu_alpha=relu_alpha, activation=activation, normalization=normalization,
        kernel_init=kernel_init, is_upscale=True, opts=opts,
    )
    return layers.pixel_shuffle(x, scale, name=f"{name}_pixelshuffler")


def upscale2x_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    upscale_name: str,
    kernel_size: int = 3,
    activation: str | None = "leakyrelu",
    interpolation: str = "bilinear",
    sr_ratio: float = 0.5,
    scale: int = 2,
    fast: bool = False,
    kernel_init: Initializer | None = None,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's `Upscale2xBlock` (`name` = `upscale2x_{filters}_{fast|hyb}_{n}`, its inner
    UpscaleBlock `upscale_name` = `upscale_{f}_{m}`, named after it).

    Hybrid: concat[UpscaleBlock(f), UpSampling(Conv2D(f, 3))] with f = filters - int(filters *
    sr_ratio). Fast: UpSampling(Conv2D(filters, 3)) + UpscaleBlock(filters). `activation` only
    applies to the pixel-shuffle branch.
    """
    f = filters if fast else filters - int(filters * sr_ratio)
    shuffled = upscale_block(x, f, name=upscale_name, kernel_size=kernel_size, scale=scale,
                             activation=activation, kernel_init=kernel_init, opts=opts)
    if f <= 0 and not fast:
        return shuffled
    conv = Conv2D(f, 3, kernel_init=opts.kernel_init(kernel_init, is_upscale=True),
                  **opts.policy.layer_kwargs(), name=f"{name}_conv2d")(x)
    resized = layers.upsampling2d(conv, scale, interpolation, name=f"{name}_upsampling2D")
    if fast:
        return layers.add([resized, shuffled])
    return layers.concatenate([shuffled, resized], name=f"{name}_concatenate")


def upscale_resize_images_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 3,
    activation: str | None = "leakyrelu",
    scale: int = 2,
    interpolation: str = "bilinear",
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's `UpscaleResizeImagesBlock` (`upscale_ri_{f}_{n}`): a conv over the resized
    image plus a Keras stride-2 transposed conv (Glorot), then LeakyReLU(0.2) / Swish / PReLU."""
    kw = opts.policy.layer_kwargs()
    resized = layers.resize_images(x, scale, interpolation, name=f"{name}_resize")
    a = Conv2D(filters, kernel_size, kernel_init=opts.kernel_init(None, is_upscale=True), **kw,
               name=f"{name}_conv")(resized)
    b = Conv2DTranspose(filters, 3, 2, **kw, name=f"{name}_convtrans")(x)
    return activate(layers.add([a, b]), activation, name=name, relu_alpha=0.2, opts=opts)


def upscale_dny_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 3,
    activation: str | None = "leakyrelu",
    size: int = 2,
    interpolation: str = "bilinear",
    kernel_init: Initializer | None = None,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's `UpscaleDNYBlock` (`upscale_dny_{f}_{n}`): bilinear upsampling then two
    stride-1 Conv2DBlocks `{name}_conv2d_1`, `{name}_conv2d_2` with LeakyReLU(0.2)."""
    x = layers.upsampling2d(x, size, interpolation, name=f"{name}_upsample2d")
    for idx in (1, 2):
        x = conv2d_block(x, filters, name=f"{name}_conv2d_{idx}", kernel_size=kernel_size,
                         strides=1, relu_alpha=0.2, activation=activation,
                         kernel_init=kernel_init, is_upscale=True, opts=opts)
    return x


def residual_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 3,
    use_bias: bool = True,
    kernel_init: Initializer | None = None,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """Faceswap's `ResidualBlock`: [reflect] conv, LeakyReLU(0.2), [reflect] conv (initialised
    small: VarianceScaling 0.2), add the input, LeakyReLU(0.2)."""
    kw = dict(use_bias=use_bias, **opts.policy.layer_kwargs())
    padding = "VALID" if opts.reflect_padding else "SAME"
    inits = (opts.kernel_init(kernel_init), opts.kernel_init(residual_second_init))
    y = x
    for idx, init in enumerate(inits):
        if opts.reflect_padding:
            y = layers.reflection_padding(y, kernel_size, 1,
                                          name=f"{name}_reflectionpadding2d_{idx}")
        y = Conv2D(filters, kernel_size, 1, padding, kernel_init=init, **kw,
                   name=f"{name}_conv2d_{idx}")(y)
        if idx == 0:
            y = layers.leaky_relu(y, 0.2, name=f"{name}_leakyrelu_1")
    return layers.leaky_relu(layers.add([y, x]), 0.2, name=f"{name}_leakyrelu_3")


def dense(
    x: jax.Array,
    features: int,
    *,
    name: str,
    kernel_init: Initializer = glorot_uniform,
    opts: BlockOptions = DEFAULT_OPTIONS,
) -> jax.Array:
    """A plain Keras Dense layer: Glorot-uniform kernel unless given, zero bias, no activation.
    Only `opts.policy` applies: Faceswap's build switches skip Dense layers."""
    return nn.Dense(features, kernel_init=kernel_init, **opts.policy.layer_kwargs(), name=name)(x)


def separable_conv2d_block(x: jax.Array, filters: int, *, name: str, kernel_size: int = 5,
                           strides: int = 2, kernel_init: Initializer | None = None,
                           opts: BlockOptions = DEFAULT_OPTIONS) -> jax.Array:
    """Faceswap's `SeparableConv2DBlock`: separable conv (`{name}_seperableconv2d`, sic), ReLU."""
    x = SeparableConv2D(filters, kernel_size, strides, kernel_init=opts.kernel_init(kernel_init),
                        **opts.policy.layer_kwargs(), name=f"{name}_seperableconv2d")(x)
    return layers.activation(x, "relu", name=f"{name}_relu")


class GaussianNoise(nn.Module):
    """Keras GaussianNoise: adds N(0, stddev) while training (a `dropout` stream is given)."""

    stddev: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.has_rng("dropout"):
            return x
        noise = jax.random.normal(self.make_rng("dropout"), x.shape, jnp.float32) * self.stddev
        return x + noise.astype(x.dtype)


class Dropout(nn.Module):
    """Keras Dropout (inverted: kept units scaled by 1/(1-rate)) while training.

    `spatial=True` is Keras' SpatialDropout2D: whole channels are dropped per sample.
    """

    rate: float
    spatial: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.rate == 0.0 or not self.has_rng("dropout"):
            return x
        shape = (x.shape[0], 1, 1, x.shape[-1]) if self.spatial else x.shape
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, shape)
        return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)
