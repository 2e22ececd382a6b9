"""Faceswap's IAE, the Improved AutoEncoder (`plugins/train/model/iae.py`, models.md §2.3).

One encoder and ONE decoder shared by both sides; identity lives in the intermediates: side A's
code is [inter_a(e), inter_both(e)] and side B's [inter_b(e), inter_both(e)], concatenated on
channels. 64x64 in and out. Faceswap builds the decoder before the intermediates, which is why
the intermediates' auto-named dense layers are inter_a: dense/dense_1, inter_b: dense_2/dense_3,
inter_both: dense_4/dense_5.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax

from fsjax.config import ExperimentConfig
from fsjax.models.common import (
    ConvEncoder,
    DenseIntermediate,
    ModelSpec,
    UpscaleDecoder,
    conv_blocks,
    decoder_layers,
    model_options,
)
from fsjax.nn import blocks, layers

INPUT_SIZE = 64
OUTPUT_SIZES = (64,)


class IAE(nn.Module):
    """`encoder`, `inter_a`, `inter_b`, `inter_both` and the shared `decoder`."""

    encoder: nn.Module
    inter_a: nn.Module
    inter_b: nn.Module
    inter_both: nn.Module
    decoder: nn.Module
    # Faceswap builds the decoder before the intermediates (their Keras input layer numbers).
    keras_build_order: ClassVar[tuple[str, ...]] = (
        "encoder", "decoder", "inter_a", "inter_b", "inter_both")

    def _code(self, face: jax.Array, side: str) -> jax.Array:
        encoded = self.encoder(face)
        own = self.inter_a(encoded) if side == "a" else self.inter_b(encoded)
        return layers.concatenate([own, self.inter_both(encoded)])

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        return {"a": self.decoder(self._code(face_a, "a")),
                "b": self.decoder(self._code(face_b, "b"))}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Decodes `face` through `to_side`'s intermediate (the A->B convert path uses "b")."""
        return self.decoder(self._code(face, to_side))


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds IAE with Faceswap's layer names."""
    opts, learn_mask = model_options(config), config.loss.learn_mask
    names = blocks.Namer()
    encoder = ConvEncoder(convs=conv_blocks(names, (128, 256, 512, 1024)), opts=opts)
    decoder = UpscaleDecoder(
        **decoder_layers(names, (512, 256, 128, 64), "", learn_mask, out_base="face_out"),
        opts=opts)

    def intermediate(first: int) -> DenseIntermediate:
        dense = ((f"dense_{first}" if first else "dense", 1024), (f"dense_{first + 1}", 8192))
        return DenseIntermediate(dense=dense, reshape=(4, 4, 512), opts=opts)

    module = IAE(encoder, intermediate(0), intermediate(2), intermediate(4), decoder)
    return ModelSpec(module, "iae", INPUT_SIZE, OUTPUT_SIZES, learn_mask)
