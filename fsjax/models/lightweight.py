"""Faceswap's Lightweight model (`plugins/train/model/lightweight.py`, reference/models.md §2.2).

Original's layout made smaller for low-memory GPUs: a three-conv encoder with a 512 bottleneck
and a 4x4x512 code upscaled once, and decoders of 512/256/128 upscales. 64x64 in and out.
"""

from __future__ import annotations

from fsjax.config import ExperimentConfig
from fsjax.models.common import ModelSpec, build_classic

INPUT_SIZE = 64


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds Lightweight with Faceswap's layer names (counters shared across sub-models)."""
    return build_classic(config, "lightweight", INPUT_SIZE, conv_filters=(128, 256, 512),
                         dense=512, reshape=(4, 4, 512), upscale_filters=(256,),
                         decoder_filters=(512, 256, 128))
