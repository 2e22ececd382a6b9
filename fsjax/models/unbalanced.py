"""Faceswap's Unbalanced model (`plugins/train/model/unbalanced.py`, reference/models.md §2.9).

The encoder holds the whole bottleneck: five strided convs (the first two instance-normalised,
Faceswap's per-sample norm over H x W x C), Flatten, Dense(nodes), Dense and a reshape to an
(input/16)^2 x 512 grid. The two decoders differ on purpose: A is four plain 5x5 upscales with
SpatialDropout2D after the first two; B stacks (un-activated upscale, LeakyReLU 0.2, residual)
three times before a last upscale. `lowmem` replaces nodes and the complexities with fixed values
(encoder 128, nodes 512, grid depth 384, A 320, B 384) and makes B four plain upscales halving
each time (its mask branch too) instead of the residual stages. The encoder's convs and Dense
layers, the face upscales and the first conv of each residual block start from N(0, 0.02), as
Faceswap passes it; the outputs and the mask branches (3x3 upscales) keep the defaults.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from fsjax.config import ExperimentConfig, UnbalancedConfig
from fsjax.models.common import (
    FaceDecoder,
    Layers,
    ModelSpec,
    SharedEncoder,
    conv_blocks,
    mask_layers,
    model_options,
)
from fsjax.nn import blocks, layers

INIT = nn.initializers.normal(0.02)
LOWMEM = dict(complexity_encoder=128, nodes=512, dense_dim=384, complexity_decoder_a=320,
              complexity_decoder_b=384)
"""What `lowmem` puts in place of the options (and of the 512-deep grid)."""


class Encoder(nn.Module):
    """input x input x 3 face -> (input/16)^2 x dense_dim grid."""

    convs: Layers  # the first two carry InstanceNormalization
    dense: Layers
    reshape: tuple[int, int, int]
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(kernel_init=INIT, opts=self.opts)
        for idx, (name, filters) in enumerate(self.convs):
            x = blocks.conv2d_block(x, filters, name=name,
                                    normalization="instance" if idx < 2 else None, **kw)
        x = layers.flatten(x)
        for name, units in self.dense:
            x = blocks.dense(x, units, name=name, **kw)
        return layers.reshape(x, self.reshape)


class Decoder(FaceDecoder):
    """5x5 upscale stages, then the face output; a 3x3 mask branch from the input when asked.

    A stage with a residual block upscales without activation and adds LeakyReLU 0.2 before
    it; a stage with a dropout rate ends in SpatialDropout2D (active only with a `dropout` rng).
    """

    stages: tuple[tuple[str, int, str | None, float], ...]  # (upscale, filters, residual, rate)

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        kw = dict(kernel_init=INIT, opts=self.opts)
        face, dropouts = x, 0
        for up, filters, res, rate in self.stages:
            face = blocks.upscale_block(face, filters, name=up, kernel_size=5,
                                        activation=None if res else "leakyrelu", **kw)
            if res is not None:
                face = blocks.residual_block(layers.leaky_relu(face, 0.2), filters, name=res,
                                             **kw)
            if rate:
                name = f"spatial_dropout2d_{dropouts}" if dropouts else "spatial_dropout2d"
                face = blocks.Dropout(rate, spatial=True, name=name)(face)
                dropouts += 1
        return self.outputs(face, x)


def _sizes(cfg: UnbalancedConfig, lowmem: bool) -> dict[str, int]:
    """The widths the model is built with: the options, or lowmem's fixed values."""
    if lowmem:
        return LOWMEM
    return dict(complexity_encoder=cfg.complexity_encoder, nodes=cfg.nodes, dense_dim=512,
                complexity_decoder_a=cfg.complexity_decoder_a,
                complexity_decoder_b=cfg.complexity_decoder_b)


def _decoder(names: blocks.Namer, side: str, sizes: dict[str, int], lowmem: bool,
             learn_mask: bool, opts: blocks.BlockOptions) -> Decoder:
    """One side's decoder, its layer names requested in Faceswap's order (face, then mask)."""
    if side == "a":
        c = sizes["complexity_decoder_a"]
        face = ((c, 0.25), (c, 0.15 if lowmem else 0.25), (c // 2, 0.0), (c // 4, 0.0))
        stages = tuple((names(f"upscale_{f}"), f, None, rate) for f, rate in face)
        mask = (c, c, c // 2, c // 4)
    elif lowmem:
        c = sizes["complexity_decoder_b"]
        stages = tuple((names(f"upscale_{f}"), f, None, 0.0) for f in (c, c // 2, c // 4, c // 8))
        mask = (c, c // 2, c // 4, c // 8)
    else:
        c = sizes["complexity_decoder_b"]
        stages = tuple((names(f"upscale_{f}"), f, names(f"residual_{f}"), 0.0)
                       for f in (c, c, c // 2))
        stages += ((names(f"upscale_{c // 4}"), c // 4, None, 0.0),)
        mask = (c, c, c // 2, c // 4)
    fields: dict[str, Any] = {"stages": stages, "face_out": names(f"face_out_{side}")}
    fields |= mask_layers(names, mask, f"mask_out_{side}", learn_mask)
    return Decoder(**fields, opts=opts)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds Unbalanced with Faceswap's layer names (counters shared across sub-models)."""
    cfg: UnbalancedConfig = config.model.unbalanced
    opts = model_options(config)
    lowmem, learn_mask = config.model.lowmem, config.loss.learn_mask
    sizes = _sizes(cfg, lowmem)
    grid, depth = cfg.input_size // 16, sizes["dense_dim"]
    names = blocks.Namer()
    ce = sizes["complexity_encoder"]
    encoder = Encoder(convs=conv_blocks(names, (ce, 2 * ce, 4 * ce, 6 * ce, 8 * ce)),
                      dense=(("dense", sizes["nodes"]), ("dense_1", grid * grid * depth)),
                      reshape=(grid, grid, depth), opts=opts)

    decoders = [_decoder(names, side, sizes, lowmem, learn_mask, opts) for side in "ab"]
    return ModelSpec(SharedEncoder(encoder, *decoders), "unbalanced", cfg.input_size,
                     (cfg.input_size,), learn_mask)
