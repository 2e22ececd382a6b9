"""Faceswap's Original model (`plugins/train/model/original.py`, reference/models.md §2.1).

A shared encoder (four 5x5 stride-2 convs, two dense layers, one upscale) and one decoder per
identity (three upscales and a sigmoid output), 64x64 in and out. Sub-model and layer names are
Faceswap's, so a parameter path reads `encoder/conv_128_0_conv2d/kernel` or
`decoder_b/face_out_b_0_conv2d/bias`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.config import ExperimentConfig
from fsjax.models.common import ModelSpec
from fsjax.nn import blocks

INPUT_SIZE = 64
OUTPUT_SIZES = (64,)


class Encoder(nn.Module):
    """64x64x3 face -> 8x8x512 code. `lowmem` drops the 1024 conv and halves the dense width."""

    lowmem: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        name = blocks.Namer()
        encoder_dim = 512 if self.lowmem else 1024
        filters = (128, 256, 512) if self.lowmem else (128, 256, 512, 1024)
        for f in filters:
            x = blocks.conv2d_block(x, f, name=name(f"conv_{f}"), **kw)
        x = x.reshape(x.shape[0], -1)  # Keras Flatten: row-major over (H, W, C)
        x = blocks.dense(x, encoder_dim, name="dense", **kw)
        x = blocks.dense(x, 4 * 4 * 1024, name="dense_1", **kw)
        x = x.reshape(x.shape[0], 4, 4, 1024)
        return blocks.upscale_block(x, 512, name=name("upscale_512"), **kw)


class Decoder(nn.Module):
    """8x8x512 code -> 64x64x3 face (+ 64x64x1 mask with `learn_mask`) for one side.

    `face_index`/`mask_index` are the counters Faceswap's naming reaches for this decoder's upscale
    blocks (decoder_a builds first; with learn_mask its mask branch is built right after its face).
    """

    side: str
    face_index: int
    mask_index: int | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        face = x
        for f in (256, 128, 64):
            face = blocks.upscale_block(face, f, name=f"upscale_{f}_{self.face_index}", **kw)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=f"face_out_{self.side}_0", **kw),)}
        if self.mask_index is not None:
            mask = x
            for f in (256, 128, 64):
                mask = blocks.upscale_block(mask, f, name=f"upscale_{f}_{self.mask_index}", **kw)
            out["mask"] = blocks.conv2d_output(mask, 1, 5, name=f"mask_out_{self.side}_0", **kw)
        return out


class Original(nn.Module):
    """The whole autoencoder: `encoder`, `decoder_a`, `decoder_b`."""

    lowmem: bool = False
    learn_mask: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = Encoder(self.lowmem, **kw)
        step = 2 if self.learn_mask else 1
        self.decoder_a = Decoder("a", 0, 1 if self.learn_mask else None, **kw)
        self.decoder_b = Decoder("b", step, step + 1 if self.learn_mask else None, **kw)

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        """Reconstructs each side through its own decoder (the training graph)."""
        return {"a": self.decoder_a(self.encoder(face_a)),
                "b": self.decoder_b(self.encoder(face_b))}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Encodes `face` and decodes it as identity `to_side` (the A->B convert path uses "b")."""
        decoder = self.decoder_b if to_side == "b" else self.decoder_a
        return decoder(self.encoder(face))


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds the Original model for an experiment."""
    dtype = jnp.dtype(config.model.dtype)
    module = Original(
        lowmem=config.model.lowmem, learn_mask=config.loss.learn_mask, dtype=dtype,
        param_dtype=jnp.float32,
    )
    return ModelSpec(module, "original", INPUT_SIZE, OUTPUT_SIZES, config.loss.learn_mask)
