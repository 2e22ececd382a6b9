"""Faceswap's Original model (`plugins/train/model/original.py`, reference/models.md §2.1).

A shared encoder (four 5x5 stride-2 convs, two dense layers, one upscale) and one decoder per
identity (three upscales and a sigmoid output), 64x64 in and out. Sub-model and layer names are
Faceswap's, so a parameter path reads `encoder/conv_128_0_conv2d/kernel` or
`decoder_b/face_out_b_0_conv2d/bias`. `lowmem` drops the 1024 conv and halves the dense width.
"""

from __future__ import annotations

from fsjax.config import ExperimentConfig
from fsjax.models.common import (
    ConvEncoder,
    ModelSpec,
    SharedEncoder,
    UpscaleDecoder,
    decoder_layers,
    model_kwargs,
    upscales,
)
from fsjax.nn import blocks

INPUT_SIZE = 64
OUTPUT_SIZES = (64,)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds Original with Faceswap's layer names (counters shared across sub-models)."""
    kw = model_kwargs(config)
    lowmem, learn_mask = config.model.lowmem, config.loss.learn_mask
    names = blocks.Namer()
    encoder = ConvEncoder(
        convs=tuple((names(f"conv_{f}"), f) for f in (128, 256, 512) + (() if lowmem else (1024,))),
        dense=(("dense", 512 if lowmem else 1024), ("dense_1", 4 * 4 * 1024)),
        reshape=(4, 4, 1024),
        upscales=upscales(names, (512,)),
        **kw,
    )
    decoders = [UpscaleDecoder(**decoder_layers(names, (256, 128, 64), side, learn_mask), **kw)
                for side in "ab"]
    module = SharedEncoder(encoder, *decoders)
    return ModelSpec(module, "original", INPUT_SIZE, OUTPUT_SIZES, learn_mask)
