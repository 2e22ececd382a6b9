"""Faceswap's Lightweight model (`plugins/train/model/lightweight.py`, reference/models.md §2.2).

Original's layout made smaller for low-memory GPUs: a three-conv encoder with a 512 bottleneck
and a 4x4x512 code upscaled once, and decoders of 512/256/128 upscales. 64x64 in and out.
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
    """Builds Lightweight with Faceswap's layer names (counters shared across sub-models)."""
    kw = model_kwargs(config)
    learn_mask = config.loss.learn_mask
    names = blocks.Namer()
    encoder = ConvEncoder(
        convs=tuple((names(f"conv_{f}"), f) for f in (128, 256, 512)),
        dense=(("dense", 512), ("dense_1", 4 * 4 * 512)),
        reshape=(4, 4, 512),
        upscales=upscales(names, (256,)),
        **kw,
    )
    decoders = [UpscaleDecoder(**decoder_layers(names, (512, 256, 128), side, learn_mask), **kw)
                for side in "ab"]
    module = SharedEncoder(encoder, *decoders)
    return ModelSpec(module, "lightweight", INPUT_SIZE, OUTPUT_SIZES, learn_mask)
