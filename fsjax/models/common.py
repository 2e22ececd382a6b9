"""Sub-models shared by Faceswap's classic plugins (Lightweight, DFL-H128, IAE, ...).

Each plugin file decides the layer names in Faceswap's build order with one `blocks.Namer` (the
counters run across sub-models: Lightweight's encoder has `upscale_256_0`, so decoder A's starts
at `upscale_256_1`) and hands them to these generic modules as plain tuples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.config import ExperimentConfig
from fsjax.nn import blocks, layers

Layers = tuple[tuple[str, int], ...]
"""(layer name, filters or units) in order."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the training system needs to know about a built model."""

    module: nn.Module
    name: str
    input_size: int
    output_sizes: tuple[int, ...]
    learn_mask: bool
    keras_name: str = ""
    """The name Faceswap gives the whole Keras model, where it is not the plugin's."""

    @property
    def graph_name(self) -> str:
        return self.keras_name or self.name


def model_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    """What every sub-model takes from the config: compute dtype (parameters stay float32) and
    Faceswap's build switches."""
    m = config.model
    return dict(dtype=jnp.dtype(m.dtype), param_dtype=jnp.float32,
                opts=blocks.BlockOptions(icnr_init=m.icnr_init, conv_aware_init=m.conv_aware_init,
                                         reflect_padding=m.reflect_padding))


def learned_mask(x: jax.Array, layers: Layers, out_name: str, **kw: Any) -> jax.Array:
    """The learn_mask branch every decoder adds: UpscaleBlocks from the decoder's input, then a
    1-channel sigmoid output."""
    for name, filters in layers:
        x = blocks.upscale_block(x, filters, name=name, **kw)
    return blocks.conv2d_output(x, 1, 5, name=out_name, **kw)


class ConvEncoder(nn.Module):
    """Conv2DBlocks, Flatten, then optionally Dense, Dense + Reshape and UpscaleBlocks."""

    convs: Layers
    dense: Layers = ()
    reshape: tuple[int, int, int] | None = None
    upscales: Layers = ()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, opts=self.opts)
        for name, filters in self.convs:
            x = blocks.conv2d_block(x, filters, name=name, **kw)
        x = layers.flatten(x)
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, **kw)
        if self.reshape is not None:
            x = layers.reshape(x, self.reshape)
        for name, filters in self.upscales:
            x = blocks.upscale_block(x, filters, name=name, **kw)
        return x


class DenseIntermediate(nn.Module):
    """IAE-style intermediate: Dense, Dense, Reshape."""

    dense: Layers
    reshape: tuple[int, int, int]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, dtype=self.dtype, param_dtype=self.param_dtype)
        return layers.reshape(x, self.reshape)


class UpscaleDecoder(nn.Module):
    """UpscaleBlocks then a sigmoid face output, plus a mirrored mask branch when asked."""

    face: Layers
    face_out: str
    mask: Layers = ()
    mask_out: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, opts=self.opts)
        face = x
        for name, filters in self.face:
            face = blocks.upscale_block(face, filters, name=name, **kw)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, **kw),)}
        if self.mask_out is not None:
            out["mask"] = learned_mask(x, self.mask, self.mask_out, **kw)
        return out


def upscales(names: blocks.Namer, filters: tuple[int, ...]) -> Layers:
    """Names the UpscaleBlocks of one branch in build order."""
    return tuple((names(f"upscale_{f}"), f) for f in filters)


def decoder_layers(names: blocks.Namer, filters: tuple[int, ...], side: str,
                   learn_mask: bool, out_base: str | None = None) -> dict[str, Any]:
    """UpscaleDecoder fields for one side: the face branch, then (learn_mask) its mask branch."""
    fields: dict[str, Any] = {
        "face": upscales(names, filters),
        "face_out": names(out_base or f"face_out_{side}"),
    }
    if learn_mask:
        fields["mask"] = upscales(names, filters)
        fields["mask_out"] = names(f"mask_out_{side}" if out_base is None else "mask_out")
    return fields


class SharedEncoder(nn.Module):
    """One encoder shared by both sides and a decoder per side (`encoder`, `decoder_a/b`)."""

    encoder: nn.Module
    decoder_a: nn.Module
    decoder_b: nn.Module

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        return {"a": self.decoder_a(self.encoder(face_a)),
                "b": self.decoder_b(self.encoder(face_b))}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Encodes `face` and decodes it as identity `to_side` (the A->B convert path uses "b")."""
        decoder = self.decoder_b if to_side == "b" else self.decoder_a
        return decoder(self.encoder(face))
