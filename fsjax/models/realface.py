"""Faceswap's RealFace model (`plugins/train/model/realface.py`, reference/models.md §2.8).

A shared encoder of three (strided conv, LeakyReLU 0.2, two residual blocks) stages and a last
strided conv (input/16 wide, 8 x complexity_encoder filters). The dense bottleneck lives in the
decoders, which are asymmetric on purpose: decoder A has two thirds of B's dense width, dense
filters and complexity, and plain upscales where B stacks (upscale, LeakyReLU 0.2, two residual
blocks). The dense grid width, the number of upscales and the dense filters are not options but
follow from input_size and output_size (`dense_layout`). Faceswap creates a N(0, 0.02) initializer
for this model but never passes it on, so every layer keeps the default initializers.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from fsjax.config import ExperimentConfig, RealfaceConfig
from fsjax.models.common import (
    FaceDecoder,
    Layers,
    ModelSpec,
    SharedEncoder,
    learned_mask,
    mask_layers,
    model_options,
)
from fsjax.nn import blocks, layers

DOWNSCALE = 16  # four strided encoder convs: the code is input_size / 16 wide
MASK_FILTERS = 384  # the mask branches' first upscale; not tied to any option
Residuals = tuple[tuple[str, bool], ...]  # (residual block name, use_bias)


def dense_layout(input_size: int, output_size: int) -> tuple[int, int, int]:
    """Faceswap's derived sizes: `(dense_width, upscalers_no, dense_filters)`.

    The decoders start from a dense_width^2 grid and upscale it upscalers_no (4 or 5) times to
    output_size. Of the grids under 10 pixels wide, the one whose width x 16 is nearest to
    input_size wins (on a tie, the 4-upscale layout). Wider grids get fewer dense filters:
    1024 - 64 * (dense_width - 4), rounded down to a multiple of 16.
    """
    layouts = [(output_size >> n, n) for n in (4, 5) if output_size >> n < 10]
    width, upscalers = min(layouts, key=lambda layout: abs(layout[0] * DOWNSCALE - input_size))
    filters = (1024 - (width - 4) * 64) // 16 * 16
    return width, upscalers, filters


class Encoder(nn.Module):
    """input x input x 3 face -> (input/16)^2 x 8*complexity_encoder code."""

    stages: tuple[tuple[str, str, str, int], ...]  # (conv, residual, residual, filters)
    last: tuple[str, int]
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        opts = self.opts
        for conv, res_1, res_2, filters in self.stages:
            x = layers.leaky_relu(
                blocks.conv2d_block(x, filters, name=conv, activation=None, opts=opts), 0.2)
            x = blocks.residual_block(x, filters, name=res_1, opts=opts)
            x = blocks.residual_block(x, filters, name=res_2, opts=opts)
        return blocks.conv2d_block(x, self.last[1], name=self.last[0], opts=opts)


class Decoder(FaceDecoder):
    """Flatten, Dense, Dense, Reshape, an un-activated upscale (`xy`, where the mask branch
    starts), LeakyReLU 0.2 and a bias-free residual block, then upscale stages and the output.

    A stage with residual blocks upscales without activation and adds LeakyReLU 0.2 before
    them; a stage without is a plain UpscaleBlock (LeakyReLU 0.1).
    """

    dense: Layers
    reshape: tuple[int, int, int]
    entry: tuple[str, str]  # (upscale, residual) of the dense stage, reshape[-1] filters
    stages: tuple[tuple[str, int, Residuals], ...]  # (upscale, filters, residual blocks)

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        opts = self.opts
        x = layers.flatten(x)
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, opts=opts)
        filters = self.reshape[-1]
        xy = blocks.upscale_block(layers.reshape(x, self.reshape), filters,
                                  name=self.entry[0], activation=None, opts=opts)
        face = blocks.residual_block(layers.leaky_relu(xy, 0.2), filters, name=self.entry[1],
                                     use_bias=False, opts=opts)
        for up, filters, residuals in self.stages:
            if not residuals:
                face = blocks.upscale_block(face, filters, name=up, opts=opts)
                continue
            face = layers.leaky_relu(blocks.upscale_block(face, filters, name=up,
                                                          activation=None, opts=opts), 0.2)
            for res, use_bias in residuals:
                face = blocks.residual_block(face, filters, name=res, use_bias=use_bias,
                                             opts=opts)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, opts=opts),)}
        if self.mask_out is not None:
            out["mask"] = learned_mask(layers.leaky_relu(xy, 0.1), self.mask, self.mask_out, opts)
        return out


def _decoder(names: blocks.Namer, side: str, dense: Layers, reshape: tuple[int, int, int],
             complexity: int, upscalers: int, learn_mask: bool,
             opts: blocks.BlockOptions) -> Decoder:
    """One side's decoder, its layer names requested in Faceswap's order. Side B's inner stages
    carry (bias-free, biased) residual blocks; side A's are plain upscales."""
    filters = reshape[-1]
    entry = (names(f"upscale_{filters}"), names(f"residual_{filters}"))
    stages = []
    for idx in range(upscalers - 1):  # the dense stage already upscaled once
        f = complexity >> idx
        inner = side == "b" and idx < upscalers - 2
        up = names(f"upscale_{f}")
        residuals = ((names(f"residual_{f}"), False), (names(f"residual_{f}"), True)) if inner \
            else ()
        stages.append((up, f, residuals))
    fields: dict[str, Any] = {"face_out": names(f"face_out_{side}")}
    fields |= mask_layers(names, tuple(MASK_FILTERS >> i for i in range(upscalers - 1)),
                          f"mask_out_{side}", learn_mask)
    return Decoder(dense=dense, reshape=reshape, entry=entry, stages=tuple(stages), **fields,
                   opts=opts)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds RealFace with Faceswap's layer names (counters shared across sub-models; decoder A
    is built before B, so A owns Keras' `dense`, `dense_1` and B `dense_2`, `dense_3`)."""
    opts, learn_mask = model_options(config), config.loss.learn_mask
    cfg: RealfaceConfig = config.model.realface
    width, upscalers, dense_filters = dense_layout(cfg.input_size, cfg.output_size)
    names = blocks.Namer()
    ce = cfg.complexity_encoder
    stages = tuple((names(f"conv_{f}"), names(f"residual_{f}"), names(f"residual_{f}"), f)
                   for f in (ce, 2 * ce, 4 * ce))
    encoder = Encoder(stages=stages, last=(names(f"conv_{8 * ce}"), 8 * ce), opts=opts)
    sides = {  # side: (dense nodes, dense filters, complexity); A is B scaled by 1/1.5
        "a": (int(cfg.dense_nodes / 1.5), int(dense_filters / 1.5),
              int(cfg.complexity_decoder / 1.5)),
        "b": (cfg.dense_nodes, dense_filters, cfg.complexity_decoder),
    }
    decoders = []
    for idx, (side, (nodes, filters, complexity)) in enumerate(sides.items()):
        dense = ((f"dense_{2 * idx}" if idx else "dense", nodes),
                 (f"dense_{2 * idx + 1}", width * width * filters))
        decoders.append(_decoder(names, side, dense, (width, width, filters), complexity,
                                 upscalers, learn_mask, opts))
    return ModelSpec(SharedEncoder(encoder, *decoders), "realface", cfg.input_size,
                     (cfg.output_size,), learn_mask)
