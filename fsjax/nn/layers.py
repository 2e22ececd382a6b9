"""Faceswap's parameter-free Keras layers (LeakyReLU, PixelShuffler, Add, ...) as functions.

The models call these rather than bare `jnp` expressions so that a model fsjax created can be
written back as a Keras graph: while a recorder is active (`recording`, used only by
`fsjax.interop.keras_graph`), each call reports its Keras class, config, name, inputs and output.
Otherwise a call is exactly its `jnp` expression, so training and conversion do not change.

`name=None` means Faceswap let Keras name the layer (`leaky_re_lu_3`, `add`); the recorder numbers
those in build order as Keras does.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp


class Recorder(Protocol):
    def layer(self, class_name: str, config: dict[str, Any], name: str | None,
              inputs: Sequence[jax.Array], output: jax.Array) -> None: ...


_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "fsjax_keras_recorder", default=None)


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Reports every layer called in this context to `recorder` (graph export only)."""
    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def _done(class_name: str, config: dict[str, Any], name: str | None,
          inputs: Sequence[jax.Array], output: jax.Array) -> jax.Array:
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.layer(class_name, config, name, inputs, output)
    return output


def leaky_relu(x: jax.Array, negative_slope: float, name: str | None = None) -> jax.Array:
    return _done("LeakyReLU", {"negative_slope": negative_slope}, name, [x],
                 nn.leaky_relu(x, negative_slope))


def _hard_sigmoid(v: jax.Array) -> jax.Array:
    return jax.nn.relu6(v + 3.0) / 6.0  # Keras 3's hard_sigmoid


_ACTIVATIONS = {
    "sigmoid": lambda v: jax.nn.sigmoid(v.astype(jnp.float32)),  # float32, as Faceswap's outputs
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "gelu": lambda v: jax.nn.gelu(v, approximate=False),  # Keras' default is the exact erf form
    "tanh": jnp.tanh,
    "hard_sigmoid": _hard_sigmoid,
    "hard_swish": lambda v: v * _hard_sigmoid(v),
    "softmax": jax.nn.softmax,
    "linear": lambda v: v,
}
"""Keras activation names and their functions (the ones Faceswap's encoders use)."""


def activation(x: jax.Array, kind: str, name: str | None = None) -> jax.Array:
    """Keras `Activation` by name (`_ACTIVATIONS`)."""
    return _done("Activation", {"activation": kind}, name, [x], _ACTIVATIONS[kind](x))


def rescaling(x: jax.Array, scale: float, offset: float = 0.0,
              name: str | None = None) -> jax.Array:
    """Keras `Rescaling`: x * scale + offset."""
    return _done("Rescaling", {"scale": scale, "offset": offset}, name, [x],
                 x * jnp.asarray(scale, x.dtype) + jnp.asarray(offset, x.dtype))


def swish(x: jax.Array, name: str | None = None) -> jax.Array:
    """Faceswap's `Swish` layer (beta 1)."""
    return _done("Swish", {"beta": 1.0}, name, [x], nn.swish(x))


def pixel_shuffle(x: jax.Array, scale: int = 2, name: str | None = None) -> jax.Array:
    """Faceswap's `PixelShuffler`: depth to space in TensorFlow's channel order,
    `out[h*r + i, w*r + j, c] = in[h, w, (i*r + j)*C + c]` (not torch's PixelShuffle order)."""
    n, h, w, c = x.shape
    oc = c // (scale * scale)
    y = x.reshape(n, h, w, scale, scale, oc).transpose(0, 1, 3, 2, 4, 5)
    return _done("PixelShuffler", {"size": [scale, scale], "data_format": "channels_last"},
                 name, [x], y.reshape(n, h * scale, w * scale, oc))


def upsampling2d(x: jax.Array, size: int, interpolation: str = "nearest",
                 name: str | None = None) -> jax.Array:
    """Keras UpSampling2D: nearest repeats pixels; bilinear uses half-pixel centres."""
    if interpolation == "nearest":
        y = jnp.repeat(jnp.repeat(x, size, axis=1), size, axis=2)
    else:
        n, h, w, c = x.shape
        y = jax.image.resize(x, (n, h * size, w * size, c), "bilinear").astype(x.dtype)
    return _done("UpSampling2D", {"size": [size, size], "data_format": "channels_last",
                                  "interpolation": interpolation}, name, [x], y)


def resize_images(x: jax.Array, size: int, interpolation: str = "bilinear",
                  name: str | None = None) -> jax.Array:
    """Faceswap's `KResizeImages`: the same resize as UpSampling2D, as its own layer class."""
    y = upsampling2d(x, size, interpolation) if _RECORDER.get() is None else _quiet(
        upsampling2d, x, size, interpolation)
    return _done("KResizeImages", {"size": size, "interpolation": interpolation}, name, [x], y)


def _quiet(fn: Any, *args: Any) -> jax.Array:
    token = _RECORDER.set(None)
    try:
        return fn(*args)
    finally:
        _RECORDER.reset(token)


def add(xs: Sequence[jax.Array], name: str | None = None) -> jax.Array:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return _done("Add", {}, name, xs, out)


def multiply(xs: Sequence[jax.Array], name: str | None = None) -> jax.Array:
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return _done("Multiply", {}, name, xs, out)


def concatenate(xs: Sequence[jax.Array], axis: int = -1, name: str | None = None) -> jax.Array:
    return _done("Concatenate", {"axis": axis}, name, xs, jnp.concatenate(xs, axis=axis))


def flatten(x: jax.Array, name: str | None = None) -> jax.Array:
    """Keras Flatten: row-major over (H, W, C)."""
    return _done("Flatten", {"data_format": "channels_last"}, name, [x],
                 x.reshape(x.shape[0], -1))


def reshape(x: jax.Array, shape: Sequence[int], name: str | None = None) -> jax.Array:
    return _done("Reshape", {"target_shape": list(shape)}, name, [x],
                 x.reshape(x.shape[0], *shape))


def reflection_padding(x: jax.Array, kernel_size: int, strides: int,
                       name: str | None = None) -> jax.Array:
    """Faceswap's ReflectionPadding2D: the SAME output size, padded by reflection (no edge
    repeat). Per axis the total is max(k - s, 0) when the size divides by s, else
    max(k - size % s, 0); the smaller half goes first."""
    pads = [(0, 0)]
    for size in x.shape[1:3]:
        total = max(kernel_size - (strides if size % strides == 0 else size % strides), 0)
        pads.append((total // 2, total - total // 2))
    return _done("ReflectionPadding2D", {"stride": strides, "kernel_size": kernel_size}, name,
                 [x], jnp.pad(x, pads + [(0, 0)], mode="reflect"))


def zero_padding(x: jax.Array, pad: int | tuple[tuple[int, int], tuple[int, int]],
                 name: str | None = None) -> jax.Array:
    """Keras `ZeroPadding2D`: `pad` pixels on every side, or ((top, bottom), (left, right))."""
    (t, b), (le, r) = ((pad, pad), (pad, pad)) if isinstance(pad, int) else pad
    y = jnp.pad(x, ((0, 0), (t, b), (le, r), (0, 0)))
    return _done("ZeroPadding2D", {"padding": [[t, b], [le, r]],
                                   "data_format": "channels_last"}, name, [x], y)


def _pool_config(pool: int, strides: int, padding: str) -> dict[str, Any]:
    return {"pool_size": [pool, pool], "padding": padding.lower(), "strides": [strides, strides],
            "data_format": "channels_last"}


def average_pooling(x: jax.Array, pool: int = 2, name: str | None = None, *,
                    strides: int | None = None, padding: str = "VALID") -> jax.Array:
    """Keras `AveragePooling2D` (`strides` default `pool`); SAME padding averages only the real
    pixels under the window, as Keras does."""
    s = pool if strides is None else strides
    y = nn.avg_pool(x, (pool, pool), strides=(s, s), padding=padding,
                    count_include_pad=padding == "VALID")
    return _done("AveragePooling2D", _pool_config(pool, s, padding), name, [x], y)


def max_pooling(x: jax.Array, pool: int = 2, name: str | None = None, *,
                strides: int | None = None, padding: str = "VALID") -> jax.Array:
    """Keras `MaxPooling2D` (`strides` default `pool`)."""
    s = pool if strides is None else strides
    y = nn.max_pool(x, (pool, pool), strides=(s, s), padding=padding)
    return _done("MaxPooling2D", _pool_config(pool, s, padding), name, [x], y)


def global_average_pooling(x: jax.Array, name: str | None = None) -> jax.Array:
    return _done("GlobalAveragePooling2D", {"data_format": "channels_last", "keepdims": False},
                 name, [x], x.mean(axis=(1, 2)))


def global_max_pooling(x: jax.Array, name: str | None = None) -> jax.Array:
    return _done("GlobalMaxPooling2D", {"data_format": "channels_last", "keepdims": False},
                 name, [x], x.max(axis=(1, 2)))


def cropping(x: jax.Array, crop: int | tuple[tuple[int, int], tuple[int, int]],
             name: str | None = None) -> jax.Array:
    """Keras `Cropping2D`: `crop` pixels off every side, or ((top, bottom), (left, right))."""
    (t, b), (le, r) = ((crop, crop), (crop, crop)) if isinstance(crop, int) else crop
    y = x[:, t:x.shape[1] - b, le:x.shape[2] - r, :]
    return _done("Cropping2D", {"cropping": [[t, b], [le, r]],
                                "data_format": "channels_last"}, name, [x], y)
