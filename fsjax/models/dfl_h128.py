"""Faceswap's DFL-H128 model (`plugins/train/model/dfl_h128.py`, reference/models.md §2.5).

DeepFaceLab's H128: four convs down to 8x8x1024, a dense bottleneck of E = 512 (256 with
`lowmem`) reshaped to 8x8xE and upscaled once; decoders of E, E/2, E/4 upscales. 128 in and out.
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

INPUT_SIZE = 128
OUTPUT_SIZES = (128,)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds DFL-H128 with Faceswap's layer names (counters shared across sub-models)."""
    kw = model_kwargs(config)
    learn_mask = config.loss.learn_mask
    dim = 256 if config.model.lowmem else 512
    names = blocks.Namer()
    encoder = ConvEncoder(
        convs=tuple((names(f"conv_{f}"), f) for f in (128, 256, 512, 1024)),
        dense=(("dense", dim), ("dense_1", 8 * 8 * dim)),
        reshape=(8, 8, dim),
        upscales=upscales(names, (dim,)),
        **kw,
    )
    decoders = [
        UpscaleDecoder(**decoder_layers(names, (dim, dim // 2, dim // 4), side, learn_mask), **kw)
        for side in "ab"
    ]
    module = SharedEncoder(encoder, *decoders)
    return ModelSpec(module, "dfl_h128", INPUT_SIZE, OUTPUT_SIZES, learn_mask)
