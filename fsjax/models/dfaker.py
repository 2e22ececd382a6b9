"""Faceswap's DFaker model (`plugins/train/model/dfaker.py`, reference/models.md §2.4).

Original's encoder on a face half the output size, and decoders that alternate un-activated
upscales, LeakyReLU(0.2) and residual blocks (first conv initialised N(0, 0.02)) before a last
plain upscale. `output_size` 128 (input 64) or 256 (input 128, one more 1024 stage).
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
    classic_encoder,
    mask_layers,
    model_options,
)
from fsjax.nn import blocks, layers

RESIDUAL_INIT = nn.initializers.normal(0.02)


class Decoder(FaceDecoder):
    """(upscale without activation, LeakyReLU 0.2, residual) stages, a last upscale, output."""

    stages: tuple[tuple[str, str, int], ...]  # (upscale name, residual name, filters)
    last: tuple[str, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        face, opts = x, self.opts
        for up_name, res_name, filters in self.stages:
            face = blocks.upscale_block(face, filters, name=up_name, activation=None, opts=opts)
            face = layers.leaky_relu(face, 0.2)
            face = blocks.residual_block(face, filters, name=res_name,
                                         kernel_init=RESIDUAL_INIT, opts=opts)
        face = blocks.upscale_block(face, self.last[1], name=self.last[0], opts=opts)
        return self.outputs(face, x)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds DFaker with Faceswap's layer names (counters shared across sub-models)."""
    opts, learn_mask = model_options(config), config.loss.learn_mask
    output_size = config.model.dfaker.output_size
    names = blocks.Namer()
    encoder = classic_encoder(names, (128, 256, 512, 1024), 1024, (4, 4, 1024), (512,), opts)
    filters = ((1024,) if output_size == 256 else ()) + (512, 256, 128)
    decoders = []
    for side in "ab":
        stages = tuple((names(f"upscale_{f}"), names(f"residual_{f}"), f) for f in filters)
        fields: dict[str, Any] = {"stages": stages, "last": (names("upscale_64"), 64),
                                  "face_out": names(f"face_out_{side}")}
        fields |= mask_layers(names, filters + (64,), f"mask_out_{side}", learn_mask)
        decoders.append(Decoder(**fields, opts=opts))
    module = SharedEncoder(encoder, *decoders)
    return ModelSpec(module, "dfaker", output_size // 2, (output_size,), learn_mask)
