"""Sub-models shared by Faceswap's classic plugins (Lightweight, DFL-H128, IAE, ...).

Each plugin file decides the layer names in Faceswap's build order with one `blocks.Namer` (the
counters run across sub-models: Lightweight's encoder has `upscale_256_0`, so decoder A's starts
at `upscale_256_1`) and hands them to these generic modules as plain tuples. Every sub-model
takes one `opts` (`model_options`): the build switches and the precision policy together.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax

from fsjax.config import ExperimentConfig
from fsjax.nn import blocks, layers
from fsjax.nn.precision import Policy

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
    keras_encoder: str = ""
    """What `freeze_layers`' `keras_encoder` freezes: Phaze-A's pretrained network
    (`encoder/<Keras model name>`), "" for none."""
    keras_encoder_unmatched: str = ""
    """With `faceswap_compat`: Faceswap's name for that network where it matches no sub-model,
    so that Faceswap (and fsjax) freeze nothing for `keras_encoder`."""
    pretrained: Any = None
    """Phaze-A's pretrained network (`fsjax.models.encoders.backbone.BackboneSpec`), if any:
    what `enc_load_weights` fills."""

    @property
    def graph_name(self) -> str:
        return self.keras_name or self.name


def model_options(config: ExperimentConfig) -> blocks.BlockOptions:
    """What every sub-model takes from the config: the precision policy (`model.dtype`; parameters
    stay float32) and Faceswap's build switches."""
    m = config.model
    return blocks.BlockOptions(icnr_init=m.icnr_init, conv_aware_init=m.conv_aware_init,
                               reflect_padding=m.reflect_padding, policy=Policy.named(m.dtype))


def learned_mask(x: jax.Array, layers: Layers, out_name: str,
                 opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS) -> jax.Array:
    """The learn_mask branch every decoder adds: UpscaleBlocks from the decoder's input, then a
    1-channel sigmoid output."""
    for name, filters in layers:
        x = blocks.upscale_block(x, filters, name=name, opts=opts)
    return blocks.conv2d_output(x, 1, 5, name=out_name, opts=opts)


class ConvEncoder(nn.Module):
    """Conv2DBlocks, Flatten, then optionally Dense, Dense + Reshape and UpscaleBlocks."""

    convs: Layers
    dense: Layers = ()
    reshape: tuple[int, int, int] | None = None
    upscales: Layers = ()
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for name, filters in self.convs:
            x = blocks.conv2d_block(x, filters, name=name, opts=self.opts)
        x = layers.flatten(x)
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, opts=self.opts)
        if self.reshape is not None:
            x = layers.reshape(x, self.reshape)
        for name, filters in self.upscales:
            x = blocks.upscale_block(x, filters, name=name, opts=self.opts)
        return x


class DenseIntermediate(nn.Module):
    """IAE-style intermediate: Dense, Dense, Reshape."""

    dense: Layers
    reshape: tuple[int, int, int]
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, opts=self.opts)
        return layers.reshape(x, self.reshape)


class FaceDecoder(nn.Module):
    """What every decoder ends with: the sigmoid face output `face_out` and, with learn_mask
    (`mask_out` set), the mask branch of UpscaleBlocks `mask`. Keyword-only fields, so that a
    decoder's own fields come first."""

    _: dataclasses.KW_ONLY
    face_out: str
    mask: Layers = ()
    mask_out: str | None = None
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    def outputs(self, face: jax.Array, x: jax.Array) -> dict[str, Any]:
        """The face from `face`, the mask branch (if any) from the decoder's input `x`."""
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, opts=self.opts),)}
        if self.mask_out is not None:
            out["mask"] = learned_mask(x, self.mask, self.mask_out, self.opts)
        return out


class UpscaleDecoder(FaceDecoder):
    """UpscaleBlocks then a sigmoid face output, plus a mirrored mask branch when asked."""

    face: Layers

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        face = x
        for name, filters in self.face:
            face = blocks.upscale_block(face, filters, name=name, opts=self.opts)
        return self.outputs(face, x)


def upscales(names: blocks.Namer, filters: tuple[int, ...]) -> Layers:
    """Names the UpscaleBlocks of one branch in build order."""
    return tuple((names(f"upscale_{f}"), f) for f in filters)


def conv_blocks(names: blocks.Namer, filters: tuple[int, ...]) -> Layers:
    """Names the encoder's Conv2DBlocks in build order."""
    return tuple((names(f"conv_{f}"), f) for f in filters)


def mask_layers(names: blocks.Namer, filters: tuple[int, ...], out_name: str,
                learn_mask: bool) -> dict[str, Any]:
    """A decoder's mask branch fields (`mask`, `mask_out`), named after its face branch as
    Faceswap asks for them; none without learn_mask."""
    if not learn_mask:
        return {}
    return {"mask": upscales(names, filters), "mask_out": names(out_name)}


def decoder_layers(names: blocks.Namer, filters: tuple[int, ...], side: str,
                   learn_mask: bool, out_base: str | None = None) -> dict[str, Any]:
    """UpscaleDecoder fields for one side: the face branch, then (learn_mask) its mask branch."""
    fields: dict[str, Any] = {
        "face": upscales(names, filters),
        "face_out": names(out_base or f"face_out_{side}"),
    }
    mask_out = f"mask_out_{side}" if out_base is None else "mask_out"
    return fields | mask_layers(names, filters, mask_out, learn_mask)


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


def classic_encoder(names: blocks.Namer, conv_filters: tuple[int, ...], dense: int,
                    reshape: tuple[int, int, int], upscale_filters: tuple[int, ...],
                    opts: blocks.BlockOptions) -> ConvEncoder:
    """Original's encoder: `conv_{f}` blocks, Dense(dense), a Dense to `reshape`'s size (Keras'
    automatic `dense`, `dense_1`), the Reshape and `upscale_{f}` blocks."""
    return ConvEncoder(convs=conv_blocks(names, conv_filters),
                       dense=(("dense", dense), ("dense_1", math.prod(reshape))),
                       reshape=reshape, upscales=upscales(names, upscale_filters), opts=opts)


def build_classic(config: ExperimentConfig, name: str, size: int, *,
                  conv_filters: tuple[int, ...], dense: int, reshape: tuple[int, int, int],
                  upscale_filters: tuple[int, ...], decoder_filters: tuple[int, ...]) -> ModelSpec:
    """Original's layout, which Lightweight and DFL-H128 only resize: a `classic_encoder` shared
    by both sides and an UpscaleDecoder per side, `size` px in and out. Layer names are requested
    in Faceswap's build order (encoder, decoder A, decoder B), one counter across them."""
    opts, learn_mask = model_options(config), config.loss.learn_mask
    names = blocks.Namer()
    encoder = classic_encoder(names, conv_filters, dense, reshape, upscale_filters, opts)
    decoders = [UpscaleDecoder(**decoder_layers(names, decoder_filters, side, learn_mask),
                               opts=opts)
                for side in "ab"]
    return ModelSpec(SharedEncoder(encoder, *decoders), name, size, (size,), learn_mask)
