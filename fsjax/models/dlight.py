"""Faceswap's DLight model (`plugins/train/model/dlight.py`, reference/models.md §2.10).

A lighter DFaker descendant: 128 px faces in, 128/256/384 px out (`output_size`), with options
`features` (encoder size) and `details` (decoder B). Its quirks:

* Each of the five stride-2 encoder stages concatenates its conv with a LeakyReLU'd 2x2 average
  pool of its own input, so a downscaled copy of the image reaches the bottleneck.
* The two decoders are different networks. A: one bilinear upsample then four hybrid Upscale2x
  blocks. B `good`: un-activated hybrid upscales, LeakyReLU 0.2, residual blocks and two Keras
  BatchNormalization layers (moving statistics in `batch_stats`). B `fast`: one wide sub-pixel
  upscale then four "fast" Upscale2x blocks, and the sub-model is named `decoder_b_fast`.
* The first step of every decoder does the whole size change (x2/x4/x6 for 128/256/384), the
  four x2 upscales after it are the same for every size. ICNR (if on) still assumes scale 2.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from fsjax.config import DlightConfig, ExperimentConfig
from fsjax.models.common import ModelSpec, conv_blocks, model_options
from fsjax.nn import blocks, layers
from fsjax.nn.normalization import BatchNormalization

INPUT_SIZE = 128
UPSCALE_RATIO = {128: 2, 256: 4, 384: 6}
# Faceswap's fixed widths, read by `build` (the tests shrink them for a quick CPU pass).
CODE_SHAPE = (4, 4, 1024)
DEC_A_COMPLEXITY = 256
DEC_B_COMPLEXITY = 512
MASK_COMPLEXITY = 128

Up2x = tuple[str, str, int]
"""One Upscale2xBlock: (block name, its inner UpscaleBlock's name, filters)."""


def encoder_filters(cfg: DlightConfig) -> int:
    """Base filters of the encoder convs (Faceswap's `encoder_filters`)."""
    return 48 if cfg.features == "lowmem" else 64


def encoder_dim(cfg: DlightConfig) -> int:
    """Width of the bottleneck Dense: 512/1024/1536 plus Faceswap's extra 128."""
    return {"lowmem": 512, "fair": 1024, "best": 1536}[cfg.features] + 128


def _up2x(x: jax.Array, layer: Up2x, opts: blocks.BlockOptions, *,
          activation: str | None = "leakyrelu", fast: bool = False, scale: int = 2) -> jax.Array:
    name, inner, filters = layer
    return blocks.upscale2x_block(x, filters, name=name, upscale_name=inner,
                                  activation=activation, fast=fast, scale=scale, opts=opts)


def _mask(x: jax.Array, layers: tuple[Up2x, ...], out_name: str,
          opts: blocks.BlockOptions) -> jax.Array:
    """The learn_mask branch of all three decoders: hybrid Upscale2x blocks, 1-channel output."""
    for layer in layers:
        x = _up2x(x, layer, opts)
    return blocks.conv2d_output(x, 1, 5, name=out_name, opts=opts)


class Encoder(nn.Module):
    """128x128x3 face -> 4x4x1024 code."""

    convs: tuple[tuple[str, int], ...]
    dim: int
    code_shape: tuple[int, int, int] = CODE_SHAPE
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        opts = self.opts
        for name, filters in self.convs:
            conv = blocks.conv2d_block(x, filters, name=name, opts=opts)
            pooled = layers.leaky_relu(layers.average_pooling(x, 2), 0.1)
            x = layers.concatenate([conv, pooled])
        x = layers.flatten(x)
        x = blocks.Dropout(0.05, name="dropout")(blocks.dense(x, self.dim, name="dense", opts=opts))
        h, w, c = self.code_shape
        x = blocks.dense(x, h * w * c, name="dense_1", opts=opts)
        x = blocks.Dropout(0.05, name="dropout_1")(x)
        return layers.reshape(x, (h, w, c))


class DecoderA(nn.Module):
    """Bilinear x ratio, four hybrid Upscale2x blocks (256..32), face output."""

    ratio: int
    face: tuple[Up2x, ...]
    face_out: str
    mask: tuple[Up2x, ...] = ()
    mask_out: str | None = None
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        opts = self.opts
        x = layers.upsampling2d(x, self.ratio, "bilinear")
        face = x
        for layer in self.face:
            face = _up2x(face, layer, opts)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, opts=opts),)}
        if self.mask_out is not None:
            out["mask"] = _mask(x, self.mask, self.mask_out, opts)
        return out


class DecoderB(nn.Module):
    """`details: good`: five hybrid Upscale2x blocks (the first x ratio), the first four without
    activation and followed by LeakyReLU 0.2 and residual blocks; BatchNorm after the second and
    fourth stage."""

    ratio: int
    face: tuple[Up2x, ...]           # 512 (x ratio), 512, 256, 128, 64
    residuals: tuple[str, ...]       # residual_512 x5, residual_256, residual_128
    face_out: str
    mask: tuple[Up2x, ...] = ()
    mask_out: str | None = None
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        opts = self.opts
        bn = opts.policy.layer_kwargs()
        ups, res = iter(self.face[1:]), iter(self.residuals)

        def stage(y: jax.Array, bias: tuple[bool, ...]) -> jax.Array:
            layer = next(ups)
            y = layers.leaky_relu(_up2x(y, layer, opts, activation=None), 0.2)
            for use_bias in bias:
                y = blocks.residual_block(y, layer[2], name=next(res), use_bias=use_bias,
                                          opts=opts)
            return y

        first = _up2x(x, self.face[0], opts, activation=None, scale=self.ratio)
        face = layers.leaky_relu(first, 0.2)
        for use_bias in (True, False, False):
            face = blocks.residual_block(face, self.face[0][2], name=next(res),
                                         use_bias=use_bias, opts=opts)
        face = stage(face, (True, False))
        face = BatchNormalization(**bn, name="batch_normalization")(face)
        face = stage(face, (True,))
        face = stage(face, (False,))
        face = BatchNormalization(**bn, name="batch_normalization_1")(face)
        face = _up2x(face, next(ups), opts)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, opts=opts),)}
        if self.mask_out is not None:
            out["mask"] = _mask(layers.leaky_relu(first, 0.1), self.mask, self.mask_out, opts)
        return out


class DecoderBFast(nn.Module):
    """`details: fast`: UpscaleBlock(512) x ratio, four fast Upscale2x blocks, face output."""

    ratio: int
    upscale: tuple[str, int]
    face: tuple[Up2x, ...]           # fast 512, 256, 128, 64
    face_out: str
    mask: tuple[Up2x, ...] = ()
    mask_out: str | None = None
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, Any]:
        opts = self.opts
        name, filters = self.upscale
        x = blocks.upscale_block(x, filters, name=name, scale=self.ratio, opts=opts)
        face = x
        for layer in self.face:
            face = _up2x(face, layer, opts, fast=True)
        out = {"faces": (blocks.conv2d_output(face, 3, 5, name=self.face_out, opts=opts),)}
        if self.mask_out is not None:
            out["mask"] = _mask(x, self.mask, self.mask_out, opts)
        return out


class DLight(nn.Module):
    """Shared encoder and two different decoders. Decoder B's parameters live under
    `decoder_b_fast` instead of `decoder_b` when it is the fast one, as in Faceswap."""

    encoder: nn.Module
    decoder_a: nn.Module
    decoder_b: nn.Module | None = None
    decoder_b_fast: nn.Module | None = None

    def _b(self) -> nn.Module:
        return self.decoder_b if self.decoder_b is not None else self.decoder_b_fast

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        return {"a": self.decoder_a(self.encoder(face_a)), "b": self._b()(self.encoder(face_b))}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Encodes `face` and decodes it as identity `to_side` (the A->B convert path uses "b")."""
        return (self._b() if to_side == "b" else self.decoder_a)(self.encoder(face))


def _up2x_names(names: blocks.Namer, filters: tuple[int, ...], fast: bool = False
                ) -> tuple[Up2x, ...]:
    """Upscale2xBlock names: the block's before its inner UpscaleBlock's, as Faceswap asks."""
    out = []
    for f in filters:
        block = names(f"upscale2x_{f}_{'fast' if fast else 'hyb'}")
        out.append((block, names(f"upscale_{f if fast else f - int(f * 0.5)}"), f))
    return tuple(out)


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds DLight with Faceswap's layer names (counters shared across sub-models)."""
    opts = model_options(config)
    cfg, learn_mask = config.model.dlight, config.loss.learn_mask
    ratio = UPSCALE_RATIO[cfg.output_size]
    a, b, m = DEC_A_COMPLEXITY, DEC_B_COMPLEXITY, MASK_COMPLEXITY
    names = blocks.Namer()
    ef = encoder_filters(cfg)
    encoder = Encoder(conv_blocks(names, (ef // 2, ef, ef * 2, ef * 4, ef * 8)), encoder_dim(cfg),
                      CODE_SHAPE, opts)

    def mask_fields() -> dict[str, Any]:
        if not learn_mask:
            return {}
        return {"mask": _up2x_names(names, (m, m // 2, m // 4, m // 8)),
                "mask_out": names("mask_out")}

    face_a = _up2x_names(names, (a, a // 2, a // 4, a // 8))
    decoder_a = DecoderA(ratio, face_a, names("face_out"), **mask_fields(), opts=opts)
    if cfg.details == "good":
        face_b = _up2x_names(names, (b, b, b // 2, b // 4, b // 8))
        residuals = tuple(names(f"residual_{f}") for f in (b,) * 5 + (b // 2, b // 4))
        decoders = {"decoder_b": DecoderB(ratio, face_b, residuals, names("face_out"),
                                          **mask_fields(), opts=opts)}
    else:
        upscale = (names(f"upscale_{b}"), b)
        face_b = _up2x_names(names, (b, b // 2, b // 4, b // 8), fast=True)
        decoders = {"decoder_b_fast": DecoderBFast(ratio, upscale, face_b, names("face_out"),
                                                   **mask_fields(), opts=opts)}
    module = DLight(encoder, decoder_a, **decoders)
    return ModelSpec(module, "dlight", INPUT_SIZE, (cfg.output_size,), learn_mask)
