"""Faceswap's Original model (`plugins/train/model/original.py`, reference/models.md §2.1).

A shared encoder (four 5x5 stride-2 convs, two dense layers, one upscale) and one decoder per
identity (three upscales and a sigmoid output), 64x64 in and out. Sub-model and layer names are
Faceswap's, so a parameter path reads `encoder/conv_128_0_conv2d/kernel` or
`decoder_b/face_out_b_0_conv2d/bias`. `lowmem` drops the 1024 conv and halves the dense width.
"""

from __future__ import annotations

from fsjax.config import ExperimentConfig
from fsjax.models.common import ModelSpec, build_classic

INPUT_SIZE = 64


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds Original with Faceswap's layer names (counters shared across sub-models)."""
    lowmem = config.model.lowmem
    return build_classic(config, "original", INPUT_SIZE,
                         conv_filters=(128, 256, 512) + (() if lowmem else (1024,)),
                         dense=512 if lowmem else 1024, reshape=(4, 4, 1024),
                         upscale_filters=(512,), decoder_filters=(256, 128, 64))
