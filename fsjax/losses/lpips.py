"""LPIPS perceptual loss as Faceswap computes it: `lpips_alex`, `lpips_squeeze`, `lpips_vgg16`.

Faceswap's `LPIPSLoss` (with the collator's settings: BGR input, border crop on) does, per image:

1. flip BGR -> RGB, map [0, 1] to [-1, 1], then (x - shift) / scale per RGB channel;
2. run a frozen torchvision trunk and tap some of its layers (`NETS[net].taps`);
3. scale each tap to unit length over its channels (x / (||x|| + 1e-10));
4. square the true/predicted difference, crop `NETS[net].crops` pixels off each border (padding
   artefacts), weigh the channels with LPIPS' 1x1 linear layer (no bias);
5. resize each layer's map bilinearly (align_corners=False) to the input size, sum, times 0.1.

The result is a (N, H, W, 1) map, so the face masks multiply it as in Faceswap.

torchvision's ReLUs work in place, so a tapped conv holds its ReLU'd values; Faceswap's feature
extractor, however, drops the graph after the last tap, so AlexNet's last tap (`features.10`)
never meets its ReLU and stays raw. The LPIPS linear weights were trained on ReLU'd features, so
fsjax ReLUs it by default; `faceswap_compat=True` keeps it raw as Faceswap does.

Weights are only read from local files (`fsjax.config.lpips_files`), by `torch_file`'s
restricted reader: nothing is downloaded and nothing in a `.pth` file is run.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.config.lpips_files import (  # noqa: F401  (LOSS_NETS re-exported)
    LOSS_NETS,
    missing_message,
    weight_files,
)
from fsjax.interop import torch_file

_PRECISION = jax.lax.Precision.HIGHEST  # exact float32 convs/matmuls (no TF32 / bf16 passes)
SHIFT = (-0.030, -0.088, -0.188)  # RGB, on the [-1, 1] scale
SCALE = (0.458, 0.448, 0.450)
EPSILON = 1e-10
OUTPUT_SCALE = 0.1  # Faceswap: "this loss is STRONG"


class _Conv(NamedTuple):
    """torchvision `features.<index>` conv, always followed by a ReLU at `index + 1`."""

    index: int
    kernel: int
    stride: int = 1
    pad: int = 0


class _Pool(NamedTuple):
    kernel: int
    stride: int
    ceil: bool = False


class _Fire(NamedTuple):
    """SqueezeNet fire module: 1x1 squeeze + ReLU, then ReLU'd 1x1 and 3x3 expands, concatenated."""

    index: int


@dataclasses.dataclass(frozen=True)
class Net:
    """One LPIPS trunk: its torchvision layers up to the last tap, and its weight files.

    Attributes:
        layers: torchvision `features` layers in order (ReLUs folded into the convs).
        taps: Faceswap's return nodes, `features.<index>`.
        crops: Pixels cropped from each border of each tap's difference map.
        raw_tap: The tap Faceswap leaves without its ReLU (see the module docstring), if any.
    """

    layers: tuple[_Conv | _Pool | _Fire, ...]
    taps: tuple[str, ...]
    crops: tuple[int, ...]
    raw_tap: str | None


def _vgg16_layers() -> tuple[_Conv | _Pool, ...]:
    """Five blocks of 3x3 convs (first index, count), a 2x2 max pool between blocks."""
    layers: list[_Conv | _Pool] = []
    for block, (first, count) in enumerate(((0, 2), (5, 2), (10, 3), (17, 3), (24, 3))):
        layers += [_Pool(2, 2)] if block else []
        layers += [_Conv(first + 2 * i, 3, 1, 1) for i in range(count)]
    return tuple(layers)


NETS: dict[str, Net] = {
    "alex": Net(
        layers=(_Conv(0, 11, 4, 2), _Pool(3, 2), _Conv(3, 5, 1, 2), _Pool(3, 2),
                _Conv(6, 3, 1, 1), _Conv(8, 3, 1, 1), _Conv(10, 3, 1, 1)),
        taps=tuple(f"features.{i}" for i in (0, 3, 6, 8, 10)),
        crops=(2, 2, 1, 1, 1),
        raw_tap="features.10",
    ),
    "squeeze": Net(
        layers=(_Conv(0, 3, 2, 0), _Pool(3, 2, True), _Fire(3), _Fire(4), _Pool(3, 2, True),
                _Fire(6), _Fire(7), _Pool(3, 2, True), _Fire(9), _Fire(10), _Fire(11),
                _Fire(12)),
        taps=tuple(f"features.{i}" for i in (0, 4, 7, 9, 10, 11, 12)),
        crops=(1,) * 7,
        raw_tap=None,
    ),
    "vgg16": Net(
        layers=_vgg16_layers(),
        taps=tuple(f"features.{i}" for i in (2, 7, 14, 21, 29)),  # 29 is conv 28's ReLU
        crops=(1,) * 5,
        raw_tap=None,
    ),
}

Params = dict[str, Any]
"""{"trunk": {layer name: (HWIO weight, bias)}, "linear": tuple of (C,) channel weights}."""


# --- weights ---------------------------------------------------------------------------------


def _convs(net: Net) -> list[tuple[str, int]]:
    """(torchvision name, kernel size) of every conv whose weights the trunk needs."""
    out = []
    for layer in net.layers:
        if isinstance(layer, _Conv):
            out.append((f"features.{layer.index}", layer.kernel))
        elif isinstance(layer, _Fire):
            name = f"features.{layer.index}"
            out += [(f"{name}.squeeze", 1), (f"{name}.expand1x1", 1), (f"{name}.expand3x3", 3)]
    return out


def _tapped(net: Net, layer: _Conv | _Fire) -> bool:
    # A conv is tapped under its own name or under its in-place ReLU's (vgg16 `features.29`).
    names = {f"features.{layer.index}"}
    if isinstance(layer, _Conv):
        names.add(f"features.{layer.index + 1}")
    return not names.isdisjoint(net.taps)


def _check_shapes(net: Net, path: pathlib.Path, tensors: dict[str, np.ndarray]) -> list[int]:
    """Check that the convs chain from 3 input channels; returns each tap's channel count."""

    def out_channels(name: str, in_channels: int, kernel: int) -> int:
        weight, bias = tensors[f"{name}.weight"], tensors[f"{name}.bias"]
        if weight.shape[1:] != (in_channels, kernel, kernel) or bias.shape != weight.shape[:1]:
            raise torch_file.TorchFileError(
                f"{path}: {name} has weight {weight.shape} and bias {bias.shape}, expected "
                f"(out, {in_channels}, {kernel}, {kernel}) and (out,): a different network?"
            )
        return weight.shape[0]

    channels, taps = 3, []
    for layer in net.layers:
        if isinstance(layer, _Pool):
            continue
        name = f"features.{layer.index}"
        if isinstance(layer, _Conv):
            channels = out_channels(name, channels, layer.kernel)
        else:  # a fire's expands both read its squeeze; their outputs are concatenated
            squeezed = out_channels(f"{name}.squeeze", channels, 1)
            channels = (out_channels(f"{name}.expand1x1", squeezed, 1)
                        + out_channels(f"{name}.expand3x3", squeezed, 3))
        if _tapped(net, layer):
            taps.append(channels)
    return taps


@functools.lru_cache(maxsize=3)
def _load(net: str, trunk: pathlib.Path, linear: pathlib.Path, _stamp: tuple) -> Params:
    # Cached (keyed on the files' size and mtime) because the collator resolves its losses on
    # every trace and torchvision's files are up to 528 MB.
    spec = NETS[net]
    keys = [f"{name}.{part}" for name, _ in _convs(spec) for part in ("weight", "bias")]
    tensors = torch_file.read_state_dict(trunk, keys)
    tap_channels = _check_shapes(spec, trunk, tensors)
    lin = list(torch_file.read_state_dict(linear).values())
    shapes = [tuple(w.shape) for w in lin]
    if shapes != [(1, c, 1, 1) for c in tap_channels]:
        raise torch_file.TorchFileError(
            f"{linear}: LPIPS linear weights of shapes {shapes} do not fit the trunk's taps "
            f"({tap_channels} channels)"
        )
    trunk_params = {}
    for name, _ in _convs(spec):
        weight = tensors[f"{name}.weight"].astype(np.float32).transpose(2, 3, 1, 0)  # OIHW->HWIO
        trunk_params[name] = (weight, tensors[f"{name}.bias"].astype(np.float32))
    params = {"trunk": trunk_params,
              "linear": tuple(w.reshape(-1).astype(np.float32) for w in lin)}
    for array in jax.tree.leaves(params):
        array.setflags(write=False)  # shared by every caller of the cache
    return params


def load_params(net: str, folder: str | pathlib.Path) -> Params:
    """Frozen trunk + linear weights of `net` ("alex", "squeeze", "vgg16") from `folder`.

    Raises:
        FileNotFoundError: A file is missing (the message lists the accepted names).
        TorchFileError: A file is unsafe, malformed or of another network.
    """
    folder = pathlib.Path(folder)
    trunk, linear = weight_files(net, folder)
    if trunk is None or linear is None:
        raise FileNotFoundError(missing_message(f"lpips_{net}", folder))
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in (trunk, linear))
    return _load(net, trunk.resolve(), linear.resolve(), stamp)


# --- network ---------------------------------------------------------------------------------


def preprocess(images: jax.Array, color_order: str = "bgr") -> jax.Array:
    """Faceswap's input scaling: to RGB, [0, 1] -> [-1, 1], then (x - shift) / scale."""
    if color_order == "bgr":
        images = images[..., ::-1]
    elif color_order != "rgb":
        raise ValueError(f"color_order must be 'bgr' or 'rgb', got {color_order!r}")
    return (images * 2.0 - 1.0 - jnp.asarray(SHIFT, jnp.float32)) / jnp.asarray(SCALE, jnp.float32)


def _conv(x: jax.Array, params: tuple, stride: int, pad: int) -> jax.Array:
    weight, bias = params
    out = jax.lax.conv_general_dilated(
        x, jnp.asarray(weight), (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_PRECISION,
    )
    return out + jnp.asarray(bias)


def _max_pool(x: jax.Array, pool: _Pool) -> jax.Array:
    """torch MaxPool2d (no padding); ceil mode keeps a last window that starts inside."""
    pads = []
    for length in x.shape[1:3]:
        size = (length - pool.kernel + (pool.stride - 1 if pool.ceil else 0)) // pool.stride + 1
        if pool.ceil and (size - 1) * pool.stride >= length:
            size -= 1
        if size < 1:
            raise ValueError(f"LPIPS: a {length} px feature map is too small to pool; "
                             "use larger images")
        pads.append((0, max(0, (size - 1) * pool.stride + pool.kernel - length)))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, pool.kernel, pool.kernel, 1),
        (1, pool.stride, pool.stride, 1), ((0, 0), *pads, (0, 0)),
    )


def features(
    params: Params, images: jax.Array, net: str, *, faceswap_compat: bool = False
) -> list[jax.Array]:
    """The tapped trunk outputs (NHWC, before normalisation) of preprocessed images."""
    spec = NETS[net]
    trunk = params["trunk"]
    taps = []
    x = images
    for layer in spec.layers:
        if isinstance(layer, _Pool):
            x = _max_pool(x, layer)
            continue
        name = f"features.{layer.index}"
        if isinstance(layer, _Conv):
            raw = _conv(x, trunk[name], layer.stride, layer.pad)
            x = jax.nn.relu(raw)
        else:
            squeezed = jax.nn.relu(_conv(x, trunk[f"{name}.squeeze"], 1, 0))
            x = jnp.concatenate([jax.nn.relu(_conv(squeezed, trunk[f"{name}.expand1x1"], 1, 0)),
                                 jax.nn.relu(_conv(squeezed, trunk[f"{name}.expand3x3"], 1, 1))],
                                axis=-1)
            raw = x
        if _tapped(spec, layer):
            taps.append(raw if faceswap_compat and name == spec.raw_tap else x)
    return taps


def unit_normalise(x: jax.Array) -> jax.Array:
    """x / (||x||_channels + 1e-10); at an all-zero pixel the norm adds a zero gradient, not NaN."""
    squares = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    positive = squares > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)
    return x / (norm + EPSILON)


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) weights of torch's bilinear resize with align_corners=False (edges clamp)."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = src - low
    matrix = np.zeros((out_size, in_size), np.float64)
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), high), frac)
    return matrix.astype(np.float32)


def lpips_loss(
    y_true: jax.Array,
    y_pred: jax.Array,
    *,
    params: Params,
    net: str,
    faceswap_compat: bool = False,
    color_order: str = "bgr",
) -> jax.Array:
    """LPIPS distance map (N, H, W, 1) between NHWC batches in [0, 1].

    Args:
        y_true: Target batch; any float dtype (computed in float32).
        y_pred: Predicted batch, same shape.
        params: From `load_params(net, folder)`; frozen (no gradient flows into them).
        net: "alex", "squeeze" or "vgg16".
        faceswap_compat: Keep AlexNet's last tap without its ReLU, as Faceswap does.
        color_order: Channel order of the inputs; Faceswap's models train in BGR.
    """
    spec = NETS[net]
    y_true = jnp.asarray(y_true, jnp.float32)
    y_pred = jnp.asarray(y_pred, jnp.float32)
    n, height, width, _ = y_true.shape
    params = jax.lax.stop_gradient(params)
    both = preprocess(jnp.concatenate([y_true, y_pred]), color_order)
    taps = features(params, both, net, faceswap_compat=faceswap_compat)
    total = jnp.zeros((n, height, width), jnp.float32)
    for tap, crop, weights, tap_name in zip(taps, spec.crops, params["linear"], spec.taps,
                                            strict=True):
        tap = unit_normalise(tap)
        diff = jnp.square(tap[:n] - tap[n:])
        if crop:
            diff = diff[:, crop:-crop, crop:-crop, :]
        if diff.shape[1] < 1 or diff.shape[2] < 1:
            raise ValueError(f"lpips_{net}: a {height}x{width} input leaves nothing of "
                             f"{tap_name} after its {crop} px border crop; use larger images")
        layer = jnp.einsum("nhwc,c->nhw", diff, jnp.asarray(weights), precision=_PRECISION)
        rows = jnp.asarray(bilinear_matrix(height, layer.shape[1]))
        cols = jnp.asarray(bilinear_matrix(width, layer.shape[2]))
        total = total + jnp.einsum("Hh,nhw,Ww->nHW", rows, layer, cols, precision=_PRECISION)
    return (OUTPUT_SCALE * total)[..., None]


def loss_fn(name: str, folder: str | pathlib.Path) -> Callable[..., jax.Array]:
    """`fn(y_true, y_pred, *, faceswap_compat=False)` of loss `name` with weights from `folder`."""
    net = LOSS_NETS[name]
    return functools.partial(lpips_loss, params=load_params(net, folder), net=net)


def unavailable(name: str) -> Callable[..., jax.Array]:
    """Registry stand-in for an LPIPS loss whose weights were not given: fails with the fix."""

    def fn(y_true: jax.Array, y_pred: jax.Array, **_: Any) -> jax.Array:
        raise ValueError(
            f"{name} was called without its pretrained weights: get it with "
            f"fsjax.losses.get({name!r}, lpips_weights=cfg.lpips_weights)"
        )

    return fn
