"""Faceswap's DFL-SAE model (`plugins/train/model/dfl_sae.py`, reference/models.md §2.6).

DeepFaceLab's SAE in two architectures. `df`: encoder_df (four convs, dense bottleneck, one
upscale) and a decoder per side. `liae`: encoder_liae (the convs only), intermediates
`intermediate_both` and `intermediate_b`, and one `decoder_both`; side A's code is
[inter_both(A), inter_both(A)] (DFL's design has no inter_a), side B's [inter_b(B), inter_both(B)].
Decoders stack (upscale, LeakyReLU 0.2, 2 residual blocks) three times; `multiscale_decoder` adds
outputs at 1/4 and 1/2 size.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from fsjax.config import ExperimentConfig
from fsjax.models.common import (
    ConvEncoder,
    Layers,
    ModelSpec,
    classic_encoder,
    conv_blocks,
    learned_mask,
    mask_layers,
    model_options,
)
from fsjax.nn import blocks, layers


class Intermediate(nn.Module):
    """LIAE intermediate: Dense(ae), Dense(r*r*2ae), Reshape, UpscaleBlock(2ae)."""

    dense: Layers
    reshape: tuple[int, int, int]
    upscale: tuple[str, int]
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, opts=self.opts)
        x = layers.reshape(x, self.reshape)
        return blocks.upscale_block(x, self.upscale[1], name=self.upscale[0], opts=self.opts)


class Decoder(nn.Module):
    """Three (upscale, LeakyReLU 0.2, residual x2) stages; outputs per stage if multiscale."""

    stages: tuple[tuple[str, str, str, int], ...]  # (upscale, residual, residual, filters)
    outputs: tuple[str | None, ...]  # face output name after each stage, None for none
    mask: Layers = ()
    mask_out: str | None = None
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        face, faces, opts = x, [], self.opts
        for (up, res_1, res_2, filters), out_name in zip(self.stages, self.outputs, strict=True):
            face = layers.leaky_relu(blocks.upscale_block(face, filters, name=up,
                                                          activation=None, opts=opts), 0.2)
            face = blocks.residual_block(face, filters, name=res_1, opts=opts)
            face = blocks.residual_block(face, filters, name=res_2, opts=opts)
            if out_name is not None:
                faces.append(blocks.conv2d_output(face, 3, 5, name=out_name, opts=opts))
        out: dict[str, Any] = {"faces": tuple(faces)}
        if self.mask_out is not None:
            out["mask"] = learned_mask(x, self.mask, self.mask_out, opts)
        return out


class Liae(nn.Module):
    """`encoder_liae`, `intermediate_both`, `intermediate_b`, `decoder_both`."""

    encoder_liae: nn.Module
    intermediate_both: nn.Module
    intermediate_b: nn.Module
    decoder_both: nn.Module

    def _code(self, face: jax.Array, side: str) -> jax.Array:
        encoded = self.encoder_liae(face)
        both = self.intermediate_both(encoded)
        own = both if side == "a" else self.intermediate_b(encoded)
        return layers.concatenate([own, both])

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        return {"a": self.decoder_both(self._code(face_a, "a")),
                "b": self.decoder_both(self._code(face_b, "b"))}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Decodes `face` through `to_side`'s intermediates (the A->B convert path uses "b")."""
        return self.decoder_both(self._code(face, to_side))


class Df(nn.Module):
    """`encoder_df` shared by both sides, `decoder_a` and `decoder_b`."""

    encoder_df: nn.Module
    decoder_a: nn.Module
    decoder_b: nn.Module

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        return {"a": self.decoder_a(self.encoder_df(face_a)),
                "b": self.decoder_b(self.encoder_df(face_b))}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Encodes `face` and decodes it as identity `to_side` (the A->B convert path uses "b")."""
        decoder = self.decoder_b if to_side == "b" else self.decoder_a
        return decoder(self.encoder_df(face))


def _decoder(names: blocks.Namer, side: str, d_d: int, mask_dims: int, multiscale: bool,
             learn_mask: bool, opts: blocks.BlockOptions) -> Decoder:
    stages = tuple((names(f"upscale_{f}"), names(f"residual_{f}"), names(f"residual_{f}"), f)
                   for f in (8 * d_d, 4 * d_d, 2 * d_d))
    outputs = tuple(names(f"face_out_{tag}_{side}") if multiscale or tag == 128 else None
                    for tag in (32, 64, 128))
    mask = mask_layers(names, (8 * mask_dims, 4 * mask_dims, 2 * mask_dims), f"mask_out_{side}",
                       learn_mask)
    return Decoder(stages=stages, outputs=outputs, **mask, opts=opts)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds DFL-SAE with Faceswap's layer names (counters shared across sub-models)."""
    opts, learn_mask = model_options(config), config.loss.learn_mask
    cfg = config.model.dfl_sae
    size, liae = cfg.input_size, cfg.architecture == "liae"
    d_e, d_d = 3 * cfg.encoder_dims, 3 * cfg.decoder_dims
    ae = cfg.autoencoder_dims or (256 if liae else 512)
    r = size // 16
    names = blocks.Namer()
    conv_filters = (d_e, 2 * d_e, 4 * d_e, 8 * d_e)
    out_sizes = (size // 4, size // 2, size) if cfg.multiscale_decoder else (size,)
    decoder_args = dict(d_d=d_d, mask_dims=cfg.decoder_dims, multiscale=cfg.multiscale_decoder,
                        learn_mask=learn_mask, opts=opts)
    if liae:
        encoder = ConvEncoder(convs=conv_blocks(names, conv_filters), opts=opts)
        inter = [Intermediate(dense=((f"dense_{i}" if i else "dense", ae),
                                     (f"dense_{i + 1}", r * r * 2 * ae)),
                              reshape=(r, r, 2 * ae), upscale=(names(f"upscale_{2 * ae}"), 2 * ae),
                              opts=opts)
                 for i in (0, 2)]
        decoder = _decoder(names, "both", **decoder_args)
        module: nn.Module = Liae(encoder, inter[0], inter[1], decoder)
    else:
        encoder = classic_encoder(names, conv_filters, ae, (r, r, ae), (ae,), opts)
        decoders = [_decoder(names, side, **decoder_args) for side in "ab"]
        module = Df(encoder, *decoders)
    return ModelSpec(module, "dfl_sae", size, out_sizes, learn_mask,
                     keras_name=f"dfl_sae_{cfg.architecture}")
