"""Faceswap's building blocks (`lib/model/nn_blocks.py`) for Flax Linen.

Faceswap's sub-models are flat Keras models: a block such as `Conv2DBlock` named `conv_128_0`
adds the layers `conv_128_0_conv2d` and `conv_128_0_leakyrelu` directly to its sub-model. To keep
the same flat parameter names (`encoder/conv_128_0_conv2d/kernel`), the blocks here are functions
called inside a parent's `@nn.compact` method; only layers that own parameters are Linen modules.
Layer names are always passed in explicitly (see `Namer`) instead of coming from Faceswap's
process-wide counter.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]

he_uniform = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
"""Faceswap's default kernel initializer for its Conv2D wrappers (models.md §1.2)."""
glorot_uniform = nn.initializers.xavier_uniform()
"""Keras' default for plain Dense/Conv2D layers created outside the wrappers."""


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


def pixel_shuffle(x: jax.Array, scale: int = 2) -> jax.Array:
    """Depth to space in TensorFlow's channel order (Faceswap's `PixelShuffler`).

    `out[h*r + i, w*r + j, c] = in[h, w, (i*r + j)*C + c]`, which differs from torch's PixelShuffle.
    """
    n, h, w, c = x.shape
    oc = c // (scale * scale)
    x = x.reshape(n, h, w, scale, scale, oc)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * scale, w * scale, oc)


def _conv_as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID stride-1 convolution as one matrix product over gathered patches (im2col).

    On XLA:CPU the backward passes of convolutions over small images (4x4 to 32x32) run far below
    the speed of a plain matrix product; gathering the kh*kw shifted views is cheap at these sizes
    and its gradient is a sum of shifted adds.
    """
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    patches = jnp.concatenate(
        [x[:, i:i + oh, j:j + ow, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    out = patches.reshape(n * oh * ow, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
    return out.reshape(n, oh, ow, cout)


def _conv5x5_stride2_space_to_depth(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Exact SAME-padded 5x5 stride-2 convolution computed as a 3x3 stride-1 one.

    XLA:CPU computes the input gradient of a strided conv on small inputs about 36x too slowly
    (reference/stack.md §11). Padding (1, 3), folding 2x2 pixel blocks into channels and rearranging
    the kernel (zero-padded to 6x6) gives the same outputs with a stride-1 convolution.
    """
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (1, 3), (1, 3), (0, 0)))
    hp, wp = (h + 4) // 2, (w + 4) // 2
    x = x.reshape(n, hp, 2, wp, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, 4 * c)
    k = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    k = k.reshape(3, 2, 3, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(3, 3, 4 * c, -1)
    return _conv_as_matmul(x, k)


def _conv2d(x: jax.Array, kernel: jax.Array, strides: int, padding: str) -> jax.Array:
    """Picks the fastest exact formulation for this convolution's shape (measured on XLA:CPU).

    5x5 stride-2 SAME on images up to 8 px: space-to-depth + matrix product (2.5x faster than XLA's
    conv, whose input gradient is pathological there); 3x3 stride-1 SAME up to 32 px: matrix product
    (1.1-3x faster). Everything else: XLA's convolution. All paths use the same kernel layout.
    """
    k, h, w = kernel.shape[0], x.shape[1], x.shape[2]
    small = max(h, w)
    if padding == "SAME" and strides == 2 and k == 5 and small <= 8 and h % 2 == 0 and w % 2 == 0:
        return _conv5x5_stride2_space_to_depth(x, kernel)
    if padding == "SAME" and strides == 1 and k == 3 and small <= 32:
        return _conv_as_matmul(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel)
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class Conv2D(nn.Module):
    """A Keras-compatible Conv2D: `kernel` (kh, kw, in, out), `bias` (out,), SAME or VALID padding.

    Small images take faster exact formulations (see `_conv2d`): same weights, same outputs to
    float rounding.
    """

    filters: int
    kernel_size: int
    strides: int = 1
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: Initializer = he_uniform
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, x.shape[-1], self.filters), self.param_dtype
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = _conv2d(x, kernel, self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.filters,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


def conv2d_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 5,
    strides: int = 2,
    relu_alpha: float = 0.1,
    activation: str | None = "leakyrelu",
    kernel_init: Initializer = he_uniform,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> jax.Array:
    """Faceswap's `Conv2DBlock`: conv (`{name}_conv2d`) then LeakyReLU(0.1), or no activation."""
    x = Conv2D(
        filters, kernel_size, strides, kernel_init=kernel_init, dtype=dtype,
        param_dtype=param_dtype, name=f"{name}_conv2d",
    )(x)
    return x if activation is None else nn.leaky_relu(x, relu_alpha)


def conv2d_output(
    x: jax.Array,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> jax.Array:
    """Faceswap's `Conv2DOutput`: conv `{name}_conv2d` then a sigmoid computed in float32."""
    x = Conv2D(
        filters, kernel_size, 1, dtype=dtype, param_dtype=param_dtype, name=f"{name}_conv2d"
    )(x)
    return jax.nn.sigmoid(x.astype(jnp.float32))


def upscale_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 3,
    scale: int = 2,
    relu_alpha: float = 0.1,
    activation: str | None = "leakyrelu",
    kernel_init: Initializer = he_uniform,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> jax.Array:
    """Faceswap's sub-pixel `UpscaleBlock`: conv to filters*scale^2, LeakyReLU, pixel shuffle."""
    x = conv2d_block(
        x, filters * scale * scale, name=f"{name}_conv2d", kernel_size=kernel_size, strides=1,
        relu_alpha=relu_alpha, activation=activation, kernel_init=kernel_init, dtype=dtype,
        param_dtype=param_dtype,
    )
    return pixel_shuffle(x, scale)


residual_second_init = nn.initializers.variance_scaling(0.2, "fan_in", "uniform")
"""Faceswap's ResidualBlock starts its second conv small, so each block begins near identity."""


def residual_block(
    x: jax.Array,
    filters: int,
    *,
    name: str,
    kernel_size: int = 3,
    kernel_init: Initializer = he_uniform,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> jax.Array:
    """Faceswap's `ResidualBlock`: conv, LeakyReLU(0.2), conv, add the input, LeakyReLU(0.2)."""
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    y = Conv2D(filters, kernel_size, kernel_init=kernel_init, name=f"{name}_conv2d_0", **kw)(x)
    y = nn.leaky_relu(y, 0.2)
    y = Conv2D(filters, kernel_size, kernel_init=residual_second_init, name=f"{name}_conv2d_1",
               **kw)(y)
    return nn.leaky_relu(y + x, 0.2)


def dense(
    x: jax.Array,
    features: int,
    *,
    name: str,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> jax.Array:
    """A plain Keras Dense layer: Glorot-uniform kernel, zero bias, no activation."""
    return nn.Dense(
        features, kernel_init=glorot_uniform, dtype=dtype, param_dtype=param_dtype, name=name
    )(x)


class SeparableConv2D(nn.Module):
    """A Keras SeparableConv2D: `depthwise_kernel` (k, k, in, 1), `pointwise_kernel` (1, 1, in,
    out) and `bias` (out,), SAME padding."""

    filters: int
    kernel_size: int = 5
    strides: int = 2
    kernel_init: Initializer = he_uniform
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        depthwise = self.param("depthwise_kernel", self.kernel_init, (k, k, cin, 1),
                               self.param_dtype)
        pointwise = self.param("pointwise_kernel", self.kernel_init, (1, 1, cin, self.filters),
                               self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.filters,), self.param_dtype)
        x = x.astype(self.dtype)
        y = jax.lax.conv_general_dilated(
            x, depthwise.reshape(k, k, 1, cin).astype(self.dtype), (self.strides,) * 2, "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=cin)
        y = y @ pointwise.reshape(cin, self.filters).astype(self.dtype)
        return y + bias.astype(self.dtype)


def separable_conv2d_block(x: jax.Array, filters: int, *, name: str, kernel_size: int = 5,
                           strides: int = 2, kernel_init: Initializer = he_uniform,
                           dtype: Dtype = jnp.float32,
                           param_dtype: Dtype = jnp.float32) -> jax.Array:
    """Faceswap's `SeparableConv2DBlock`: separable conv (`{name}_seperableconv2d`, sic), ReLU."""
    x = SeparableConv2D(filters, kernel_size, strides, kernel_init=kernel_init, dtype=dtype,
                        param_dtype=param_dtype, name=f"{name}_seperableconv2d")(x)
    return jax.nn.relu(x)
