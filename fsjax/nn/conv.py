"""Keras-compatible convolution layers, with exact fast paths for XLA:CPU.

Weights keep Keras' layouts and names (`kernel` (kh, kw, in, out), `bias`, `depthwise_kernel`,
`pointwise_kernel`), so Faceswap's saved models map onto them one to one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.nn.initializers import Initializer, glorot_uniform, he_uniform

Dtype = Any


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
    if kernel.shape[1] != k:  # Inception's 1x7 / 7x1 kernels: XLA's convolution
        k = 0
    small = max(h, w)
    if padding == "SAME" and strides == 2 and k == 5 and small <= 8 and h % 2 == 0 and w % 2 == 0:
        return _conv5x5_stride2_space_to_depth(x, kernel)
    if padding == "SAME" and strides == 1 and k == 3 and small <= 32:
        return _conv_as_matmul(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel)
    if padding == "VALID" and strides == 1 and k == 3 and small <= 34:  # after reflect padding
        return _conv_as_matmul(x, kernel)
    return jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


class Conv2D(nn.Module):
    """A Keras-compatible Conv2D: `kernel` (kh, kw, in, out), `bias` (out,), SAME or VALID padding.
    `kernel_size` is an int or (kh, kw).

    Small images take faster exact formulations (see `_conv2d`): same weights, same outputs to
    float rounding.
    """

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int = 1
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: Initializer = he_uniform
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = _pair(self.kernel_size)
        kernel = self.param(
            "kernel", self.kernel_init, (kh, kw, x.shape[-1], self.filters), self.param_dtype
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = _conv2d(x, kernel, self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.filters,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class SeparableConv2D(nn.Module):
    """A Keras SeparableConv2D: `depthwise_kernel` (k, k, in, 1), `pointwise_kernel` (1, 1, in,
    out) and `bias` (out,) unless `use_bias=False`."""

    filters: int
    kernel_size: int = 5
    strides: int = 2
    padding: str = "SAME"
    use_bias: bool = True
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
        x = x.astype(self.dtype)
        y = jax.lax.conv_general_dilated(
            x, depthwise.reshape(k, k, 1, cin).astype(self.dtype), (self.strides,) * 2,
            self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=cin)
        y = y @ pointwise.reshape(cin, self.filters).astype(self.dtype)
        if not self.use_bias:
            return y
        bias = self.param("bias", nn.initializers.zeros, (self.filters,), self.param_dtype)
        return y + bias.astype(self.dtype)




class DepthwiseConv2D(nn.Module):
    """A Keras DepthwiseConv2D: `kernel` (k, k, in, depth_multiplier), `bias` (in * multiplier,)
    unless `use_bias=False`. Output channel `c * m + j` is input channel c's j-th filter, as in
    Keras."""

    kernel_size: int
    strides: int = 1
    padding: str = "SAME"
    use_bias: bool = True
    depth_multiplier: int = 1
    kernel_init: Initializer = he_uniform
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin, m = self.kernel_size, x.shape[-1], self.depth_multiplier
        kernel = self.param("kernel", self.kernel_init, (k, k, cin, m), self.param_dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), kernel.reshape(k, k, 1, cin * m).astype(self.dtype),
            (self.strides,) * 2, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=cin)
        if not self.use_bias:
            return y
        bias = self.param("bias", nn.initializers.zeros, (cin * m,), self.param_dtype)
        return y + bias.astype(self.dtype)


class Conv2DTranspose(nn.Module):
    """A Keras Conv2DTranspose with SAME padding: `kernel` (k, k, out, in), `bias` (out,).

    Pixel alignment is Keras' (checked against Keras numerically in the tests): input pixel
    (i, j) spreads to outputs `(s*i + a, s*j + b)` for kernel taps (a, b), cropped to s*H x s*W.
    """

    filters: int
    kernel_size: int = 3
    strides: int = 2
    kernel_init: Initializer = glorot_uniform
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, cin = self.kernel_size, self.strides, x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (k, k, self.filters, cin),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.filters,), self.param_dtype)
        # A stride-1 conv over the s-dilated input with the spatially flipped kernel. `top` is
        # the top padding of the matching forward SAME conv; the pads give exactly s*H outputs.
        flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2).astype(self.dtype)
        top = max(k - s, 0) // 2
        pad = (k - 1 - top, s - 1 + top)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), flipped, (1, 1), (pad, pad), lhs_dilation=(s, s),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(self.dtype)
