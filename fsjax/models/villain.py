"""Faceswap's Villain model (`plugins/train/model/villain.py`, reference/models.md §2.7).

A heavy 128 px model: a residual stem (16 blocks, 8 with `lowmem`) added back onto the first
conv, three conv + pixel-shuffle steps, separable convs down to 4x4, a wide dense bottleneck, and
decoders of (un-activated upscale, LeakyReLU 0.2, residual) stages. Encoder layers, the first conv
of residual blocks and the face upscales start from N(0, 0.02), as Faceswap initialises them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from fsjax.config import ExperimentConfig
from fsjax.models.common import (
    FaceDecoder,
    ModelSpec,
    SharedEncoder,
    mask_layers,
    model_options,
)
from fsjax.nn import blocks, layers

INPUT_SIZE = 128
OUTPUT_SIZES = (128,)
INIT = nn.initializers.normal(0.02)


class Encoder(nn.Module):
    """128x128x3 face -> 16x16x512 code."""

    names: tuple[str, ...]  # conv_128 x4, residuals, separable 256, conv_512, [separable 1024],
    lowmem: bool = False    # upscale_512, in build order
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(kernel_init=INIT, opts=self.opts)
        names = iter(self.names)
        stem = blocks.conv2d_block(x, 128, name=next(names), activation=None, **kw)
        x = layers.leaky_relu(stem, 0.2)
        for _ in range(8 if self.lowmem else 16):
            x = blocks.residual_block(x, 128, name=next(names), **kw)
        x = layers.add([x, layers.leaky_relu(stem, 0.1)])
        for _ in range(2):
            x = layers.pixel_shuffle(blocks.conv2d_block(x, 128, name=next(names), **kw))
        x = blocks.conv2d_block(x, 128, name=next(names), **kw)
        x = blocks.separable_conv2d_block(x, 256, name=next(names), **kw)
        x = blocks.conv2d_block(x, 512, name=next(names), **kw)
        if not self.lowmem:
            x = blocks.separable_conv2d_block(x, 1024, name=next(names), **kw)
        x = layers.flatten(x)
        x = blocks.dense(x, 512 if self.lowmem else 1024, name="dense", **kw)
        x = blocks.dense(x, 8 * 8 * 1024, name="dense_1", **kw)
        x = layers.reshape(x, (8, 8, 1024))
        return blocks.upscale_block(x, 512, name=next(names), **kw)


class Decoder(FaceDecoder):
    """(upscale without activation, LeakyReLU 0.2, residual) x3, then the face output."""

    stages: tuple[tuple[str, str, int], ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        kw = dict(kernel_init=INIT, opts=self.opts)
        face = x
        for up, res, filters in self.stages:
            face = blocks.upscale_block(face, filters, name=up, activation=None, **kw)
            face = blocks.residual_block(layers.leaky_relu(face, 0.2), filters, name=res, **kw)
        return self.outputs(face, x)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds Villain with Faceswap's layer names (counters shared across sub-models)."""
    opts = model_options(config)
    lowmem, learn_mask = config.model.lowmem, config.loss.learn_mask
    names = blocks.Namer()
    encoder_names = [names("conv_128")]
    encoder_names += [names("residual_128") for _ in range(8 if lowmem else 16)]
    encoder_names += [names("conv_128") for _ in range(3)]
    encoder_names += [names("separableconv2d_256"), names("conv_512")]
    encoder_names += [] if lowmem else [names("separableconv2d_1024")]
    encoder_names += [names("upscale_512")]
    encoder = Encoder(tuple(encoder_names), lowmem, opts)
    decoders = []
    for side in "ab":
        stages = tuple((names(f"upscale_{f}"), names(f"residual_{f}"), f) for f in (512, 256, 128))
        fields: dict[str, Any] = {"stages": stages, "face_out": names(f"face_out_{side}")}
        fields |= mask_layers(names, (512, 256, 128), f"mask_out_{side}", learn_mask)
        decoders.append(Decoder(**fields, opts=opts))
    return ModelSpec(SharedEncoder(encoder, *decoders), "villain", INPUT_SIZE, OUTPUT_SIZES,
                     learn_mask)
