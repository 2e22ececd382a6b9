"""Phaze-A's sub-models (encoder, fully connected, G-Block, decoder) as Flax modules.

`phaze_a.py` decides every layer's name and width in Faceswap's build order and hands them to
these modules as the small frozen specs below; the modules only run them. Keeping the planning
apart from the layers keeps Faceswap's name counters in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsjax.models.encoders.backbone import Backbone, BackboneSpec, scale_input
from fsjax.nn import blocks, layers
from fsjax.nn.normalization import (
    BatchNormalization,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
    RMSNormalization,
    ada_instance_norm,
)

NORMS = {"batch": BatchNormalization, "group": GroupNormalization,
         "instance": InstanceNormalization, "layer": LayerNormalization, "rms": RMSNormalization}
"""Phaze-A's normalization choices and the layers behind them."""


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One Conv2DBlock of the fs_original encoder."""

    name: str
    filters: int
    kernel: int
    strides: int
    relu_alpha: float
    valid: bool = False  # the DNY encoder's last 4x4 conv has no padding
    pool: str = ""  # MaxPooling2D name: the DNY encoder pools after each level but the last


@dataclasses.dataclass(frozen=True)
class Bottleneck:
    """Optional norm, then a Dense (`dense` is its Keras name), a global pool or just Flatten."""

    kind: str
    size: int
    dense: str
    norm: tuple[str, str] | None = None  # (normalization, layer name)


@dataclasses.dataclass(frozen=True)
class Upscaler:
    """One of Faceswap's upscale blocks with its names (`inner`: Upscale2xBlock's UpscaleBlock),
    or a parameter-free UpSampling2D (`upsample2d`, `size`, `interpolation`)."""

    method: str
    filters: int = 0
    name: str = ""
    inner: str = ""
    size: int = 2
    interpolation: str = "nearest"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of Faceswap's UpscaleBlocks: upscale, [noise], [norm], [LeakyReLU], residuals."""

    upscaler: Upscaler
    noise: str = ""  # GaussianNoise layer name ("" for none)
    norm: tuple[str, str] | None = None
    relu: float | None = 0.1
    residuals: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Chain:
    """A run of stages, after an optional reshape to output/2^k and the DNY entry convs."""

    reshape: tuple[int, int, int] | None = None
    entry: tuple[str, ...] = ()  # Conv2DBlocks with kernels 4 then 3, stride 1, LeakyReLU 0.2
    entry_filters: int = 0
    stages: tuple[Stage, ...] = ()


def normalize(x: jax.Array, norm: tuple[str, str], opts: blocks.BlockOptions) -> jax.Array:
    kind, name = norm
    return NORMS[kind](**opts.policy.layer_kwargs(), name=name)(x)


def upscale(x: jax.Array, up: Upscaler, opts: blocks.BlockOptions) -> jax.Array:
    """Runs one upscaler with LeakyReLU, as Phaze-A always asks for."""
    if up.method == "upsample2d":
        return blocks.upsampling2d(x, up.size, up.interpolation)
    if up.method == "subpixel":
        return blocks.upscale_block(x, up.filters, name=up.name, opts=opts)
    if up.method in ("upscale_fast", "upscale_hybrid"):
        return blocks.upscale2x_block(x, up.filters, name=up.name, upscale_name=up.inner,
                                      fast=up.method == "upscale_fast", opts=opts)
    if up.method == "upscale_dny":
        return blocks.upscale_dny_block(x, up.filters, name=up.name, opts=opts)
    return blocks.upscale_resize_images_block(x, up.filters, name=up.name, opts=opts)


def _entry(x: jax.Array, chain: Chain, opts: blocks.BlockOptions) -> jax.Array:
    for name, kernel in zip(chain.entry, (4, 3), strict=False):
        x = blocks.conv2d_block(x, chain.entry_filters, name=name, kernel_size=kernel, strides=1,
                                relu_alpha=0.2, opts=opts)
    return x


def _stage(x: jax.Array, stage: Stage, opts: blocks.BlockOptions) -> jax.Array:
    x = upscale(x, stage.upscaler, opts)
    if stage.noise:
        x = blocks.GaussianNoise(1.0, name=stage.noise)(x)
    if stage.norm is not None:
        x = normalize(x, stage.norm, opts)
    if stage.relu is not None:
        x = layers.leaky_relu(x, stage.relu)
    for name in stage.residuals:
        x = blocks.residual_block(x, stage.upscaler.filters, name=name, opts=opts)
    return x


def run_chains(xs: Sequence[jax.Array], chains: Sequence[Chain],
               opts: blocks.BlockOptions) -> list[jax.Array]:
    """Runs the face chain and (learn_mask) the mask chain, each step for both before the next
    as Faceswap builds them: Keras numbers their unnamed layers (reshape_N, ...) in that order."""
    xs = [x if c.reshape is None else layers.reshape(x, c.reshape)
          for x, c in zip(xs, chains, strict=True)]
    xs = [_entry(x, c, opts) for x, c in zip(xs, chains, strict=True)]
    for stages in zip(*(c.stages for c in chains), strict=True):
        xs = [_stage(x, s, opts) for x, s in zip(xs, stages, strict=True)]
    return xs


def bottleneck(x: jax.Array, spec: Bottleneck, opts: blocks.BlockOptions) -> jax.Array:
    if spec.norm is not None:
        x = normalize(x, spec.norm, opts)
    if spec.kind == "dense":
        x = blocks.dense(layers.flatten(x) if x.ndim > 2 else x, spec.size, name=spec.dense,
                         opts=opts)
    elif spec.kind == "average_pooling":
        x = layers.global_average_pooling(x)
    elif spec.kind == "max_pooling":
        x = layers.global_max_pooling(x)
    return layers.flatten(x) if x.ndim > 2 else x


class _Module(nn.Module):
    """The field every Phaze-A sub-model takes from `model_options`."""

    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS


class Encoder(_Module):
    """`encoder`: the fs_original conv blocks or a pretrained network (Faceswap's input scaling,
    then the network as a nested sub-model), then the bottleneck if it sits in the encoder."""

    convs: tuple[ConvSpec, ...] = ()
    backbone: BackboneSpec | None = None
    frozen_backbone: bool = False
    bottleneck: Bottleneck | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        opts = self.opts
        if self.backbone is not None:
            x = scale_input(x, self.backbone.scaling)
            x = Backbone(self.backbone, opts, self.frozen_backbone,
                         name=self.backbone.model_name)(x)
        for c in self.convs:
            if c.valid and not opts.reflect_padding:
                # Conv2DBlock(padding="valid"); reflect padding overrides it, like Faceswap's.
                x = blocks.Conv2D(c.filters, c.kernel, c.strides, "VALID",
                                  kernel_init=opts.kernel_init(None),
                                  **opts.policy.layer_kwargs(), name=f"{c.name}_conv2d")(x)
                x = layers.leaky_relu(x, c.relu_alpha, name=f"{c.name}_leakyrelu")
            else:
                x = blocks.conv2d_block(x, c.filters, name=c.name, kernel_size=c.kernel,
                                        strides=c.strides, relu_alpha=c.relu_alpha, opts=opts)
            if c.pool:
                x = layers.max_pooling(x, 2, name=c.pool)
        if self.bottleneck is not None:
            x = bottleneck(x, self.bottleneck, opts)
        return x


class FullyConnected(_Module):
    """`fc_{side}`: [bottleneck], Dropout + Dense layers, and (except `fc_gblock`) a reshape,
    the fc upsamplers and any decoder upscales moved into it (with the mask branch when
    learn_mask, returned as a (face, mask) pair)."""

    dense: tuple[tuple[str, int], ...] = ()
    dropout: float = 0.0
    bottleneck: Bottleneck | None = None
    reshape: tuple[int, int, int] | None = None
    upsamplers: tuple[Upscaler, ...] = ()
    upsample_relu: bool = False  # LeakyReLU(0.1) whenever the upsampler is UpSampling2D
    face: Chain | None = None
    mask: Chain | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        opts = self.opts
        if self.bottleneck is not None:
            x = bottleneck(x, self.bottleneck, opts)
        for idx, (name, units) in enumerate(self.dense):  # Faceswap names Dropout "{rate}_{n}"
            x = blocks.Dropout(self.dropout, name=f"{float(self.dropout)}_{idx + 1}")(x)
            x = blocks.dense(x, units, name=name, opts=opts)
        if self.reshape is None:
            return x
        x = layers.reshape(x, self.reshape)
        for up in self.upsamplers:
            x = upscale(x, up, opts)
        if self.upsample_relu:
            x = layers.leaky_relu(x, 0.1)
        if self.face is None:
            return x
        chains = [c for c in (self.face, self.mask) if c is not None]
        xs = run_chains([x] * len(chains), chains, opts)
        return xs[0] if len(xs) == 1 else tuple(xs)


@dataclasses.dataclass(frozen=True)
class Recursion:
    """Names of one G-Block recursion: style Dense for beta and gamma, the GaussianNoise and 1x1
    conv of its noise branch and (last recursion only) a 3x3 conv."""

    beta: str
    gamma: str
    noise: str
    noise_conv: str
    conv: str | None = None


class GBlock(_Module):
    """`g_block_{side}`: the style vector through three He-normal Dense layers, then AdaIN
    recursions on the fully connected output (computed in float32), each adding learned noise."""

    style_dense: tuple[str, ...] = ()
    conv: str = ""
    noise: str = ""
    recursions: tuple[Recursion, ...] = ()
    nodes: int = 512

    @nn.compact
    def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
        opts = self.opts
        dk = opts.policy.layer_kwargs()
        for i, name in enumerate(self.style_dense):
            style = blocks.dense(style, self.nodes, name=name, kernel_init=blocks.he_normal,
                                 opts=opts)
            if i < len(self.style_dense) - 1:
                style = layers.leaky_relu(style, 0.1)
        filters = x.shape[-1]
        x = blocks.Conv2D(filters, 3, kernel_init=opts.kernel_init(None), **dk,
                          name=self.conv)(x)
        x = blocks.GaussianNoise(1.0, name=self.noise)(x)
        for rec in self.recursions:
            beta, gamma = (layers.reshape(blocks.dense(style, filters, name=n, opts=opts),
                                          (1, 1, filters)) for n in (rec.beta, rec.gamma))
            noise = blocks.Conv2D(filters, 1, kernel_init=blocks.glorot_uniform, **dk,
                                  name=rec.noise_conv)(blocks.GaussianNoise(1.0, name=rec.noise)(x))
            if rec.conv is not None:
                x = blocks.Conv2D(filters, 3, kernel_init=blocks.glorot_uniform, **dk,
                                  name=rec.conv)(x)
            x = layers.add([ada_instance_norm(x, beta, gamma), noise.astype(jnp.float32)])
            x = layers.leaky_relu(x, 0.2).astype(opts.policy.compute_dtype)
        return x


class Decoder(_Module):
    """`decoder_{side}`: the remaining upscale stages and the sigmoid outputs. With learn_mask
    the mask branch repeats the upscales without noise or residuals; it starts from the same
    input, or from the mask the fully connected model already upscaled."""

    face: Chain = Chain()
    face_out: str = ""
    kernel: int = 5
    mask: Chain | None = None
    mask_out: str | None = None

    @nn.compact
    def __call__(self, x: Any) -> dict[str, Any]:
        opts = self.opts
        chains = [c for c in (self.face, self.mask) if c is not None]
        xs = run_chains(list(x) if isinstance(x, tuple) else [x] * len(chains), chains, opts)
        out = {"faces": (blocks.conv2d_output(xs[0], 3, self.kernel, name=self.face_out,
                                              opts=opts),)}
        if self.mask_out is not None:
            out["mask"] = blocks.conv2d_output(xs[1], 1, self.kernel, name=self.mask_out,
                                               opts=opts)
        return out


def get_curve(start: int, end: int, num_points: int, scale: float, mode: str = "full") -> list[int]:
    """Faceswap's filter curve from `start` to `end` over `num_points`, each rounded down to 8.

    `full`: y = (x - x*s) / (s - 2s|x| + 1) over x in linspace(0, 1), scaled onto start..end;
    negative s moves fast first. `cap_max` / `cap_min`: keep multiplying by (1 - |s|) until `end`,
    then pad with `start` at the front / `end` at the back. `s` is clipped to +-0.99.
    """
    scale = min(0.99, max(-0.99, scale))
    if mode == "full":
        x = np.linspace(0.0, 1.0, num=num_points)
        y = (x - x * scale) / (scale - np.abs(x) * 2 * scale + 1)
        return [int((v // 8) * 8) for v in y * (end - start) + start]
    values, ratio = [start], 1.0 - abs(scale)
    for _ in range(num_points - 1):
        values.append(max(end, int(((values[-1] * ratio) // 8) * 8)))
        if values[-1] == end:
            break
    pad = [start if mode == "cap_max" else end] * (num_points - len(values))
    return pad + values if mode == "cap_max" else values + pad


def scale_dim(target: int, dim: int) -> int:
    """The size reached by halving `target` while it stays above `dim` and whole (Faceswap's
    `_scale_dim`): the spatial size the decoder can double back up to `target`."""
    new = target
    while new > dim:
        half = new / 2
        if not half.is_integer():
            break
        new = int(half)
    return new
