"""Faceswap's DFL-H128 model (`plugins/train/model/dfl_h128.py`, reference/models.md §2.5).

DeepFaceLab's H128: four convs down to 8x8x1024, a dense bottleneck of E = 512 (256 with
`lowmem`) reshaped to 8x8xE and upscaled once; decoders of E, E/2, E/4 upscales. 128 in and out.
"""

from __future__ import annotations

from fsjax.config import ExperimentConfig
from fsjax.models.common import ModelSpec, build_classic

INPUT_SIZE = 128


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds DFL-H128 with Faceswap's layer names (counters shared across sub-models)."""
    dim = 256 if config.model.lowmem else 512
    return build_classic(config, "dfl_h128", INPUT_SIZE, conv_filters=(128, 256, 512, 1024),
                         dense=dim, reshape=(8, 8, dim), upscale_filters=(dim,),
                         decoder_filters=(dim, dim // 2, dim // 4))
