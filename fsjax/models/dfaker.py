"""Faceswap's DFaker model (`plugins/train/model/dfaker.py`, reference/models.md §2.4).

Original's encoder on a face half the output size, and decoders that alternate un-activated
upscales, LeakyReLU(0.2) and residual blocks (first conv initialised N(0, 0.02)) before a last
plain upscale. `output_size` 128 (input 64) or 256 (input 128, one more 1024 stage).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.config import ExperimentConfig
from fsjax.models.common import (
    ConvEncoder,
    Layers,
    ModelSpec,
    SharedEncoder,
    learned_mask,
    model_kwargs,
    upscales,
)
from fsjax.nn import blocks, layers

RESIDUAL_INIT = nn.initializers.normal(0.02)


class Decoder(nn.Module):
    """(upscale without activation, LeakyReLU 0.2, residual) stages, a last upscale, output."""

    stages: tuple[tuple[str, str, int], ...]  # (upscale name, residual name, filters)
    last: tuple[str, int]
    face_out: str
    mask: Layers = ()
    mask_out: str | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, opts=self.opts)
        face = x
        for up_name, res_name, filters in self.stages:
            face = blocks.upscale_block(face, filters, name=up_name, activation=None, **kw)
            face = layers.leaky_relu(face, 0.2)
            face = blocks.residual_block(face, filters, name=res_name,
                                         kernel_init=RESIDUAL_INIT, **kw)
        face = blocks.upscale_block(face, self.last[1], name=self.last[0], **kw)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, **kw),)}
        if self.mask_out is not None:
            out["mask"] = learned_mask(x, self.mask, self.mask_out, **kw)
        return out


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds DFaker with Faceswap's layer names (counters shared across sub-models)."""
    kw = model_kwargs(config)
    learn_mask = config.loss.learn_mask
    output_size = config.model.dfaker.output_size
    names = blocks.Namer()
    encoder = ConvEncoder(
        convs=tuple((names(f"conv_{f}"), f) for f in (128, 256, 512, 1024)),
        dense=(("dense", 1024), ("dense_1", 4 * 4 * 1024)),
        reshape=(4, 4, 1024),
        upscales=upscales(names, (512,)),
        **kw,
    )
    filters = ((1024,) if output_size == 256 else ()) + (512, 256, 128)
    decoders = []
    for side in "ab":
        stages = tuple((names(f"upscale_{f}"), names(f"residual_{f}"), f) for f in filters)
        fields: dict[str, Any] = {"stages": stages, "last": (names("upscale_64"), 64),
                                  "face_out": names(f"face_out_{side}")}
        if learn_mask:
            fields["mask"] = upscales(names, filters + (64,))
            fields["mask_out"] = names(f"mask_out_{side}")
        decoders.append(Decoder(**fields, **kw))
    module = SharedEncoder(encoder, *decoders)
    return ModelSpec(module, "dfaker", output_size // 2, (output_size,), learn_mask)
