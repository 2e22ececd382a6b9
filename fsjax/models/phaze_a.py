"""Faceswap's Phaze-A model (`plugins/train/model/phaze_a.py`, reference/models.md §2.11).

A configurable autoencoder: a shared `encoder` (Faceswap's own fs_original, its DNY variant, or
a pretrained Keras-Applications / CLIP network nested in it, `fsjax.models.encoders`), fully
connected "hidden" models (`fc_a`/`fc_b` or `fc_both`, optionally `fc_shared`
concatenated to them), an optional StyleGAN-like G-Block fed by a shared `fc_gblock`, and
decoders (`decoder_both` or `decoder_a`/`decoder_b`). Faceswap's presets re-create the classic
models with it (`phaze_a_presets.py`).

Faceswap quirks kept on purpose, since layer names and counts depend on them:
- The decoder filter list is computed once, by the first upscale chain built (which may sit in
  a fully connected model when `dec_upscales_in_fc` > 0), and each chain skips the residual
  blocks of *its own* last upscale when `dec_skip_last_residual` is set.
- The fc filters are scaled for the output size from `fc_dimensions * (fc_upsamples + 1)`,
  which is the real final size only for 0 or 1 upsamples.
- Every bottleneck creates a Keras Dense (using up an automatic `dense_N` name) even when the
  bottleneck is a pooling or a plain flatten; an `upsample2d` fc upsampler is followed by
  LeakyReLU(0.1) even with `fc_upsamples` = 0, and a single one is nearest, not bilinear.
- The DNY encoder's last 4x4 conv is unpadded, except with reflect padding, which Faceswap
  applies to it anyway (keeping the size).
Combinations Faceswap's Keras graph cannot build (a reshape that does not divide, a decoder
that cannot reach the output size, group norm on widths that are not multiples of 32) raise
ConfigError here instead. learn_mask with `dec_upscales_in_fc` sends the mask, upscaled in the
fully connected model, on to the decoder as Faceswap intends (its decoder build appears to index
that input one level too deep, so Faceswap itself does not build it).
"""

from __future__ import annotations

import collections
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from fsjax.config import ConfigError, ExperimentConfig, PhazeAConfig
from fsjax.models import encoders
from fsjax.models.common import ModelSpec, model_options
from fsjax.models.encoders import backbone
from fsjax.models.phaze_a_layers import (
    Bottleneck,
    Chain,
    ConvSpec,
    Decoder,
    Encoder,
    FullyConnected,
    GBlock,
    Recursion,
    Stage,
    Upscaler,
    get_curve,
    scale_dim,
)
from fsjax.nn import blocks, layers

Shape = tuple[int, ...]
_NORM_LAYERS = {"batch": "batch_normalization", "group": "group_normalization",
                "instance": "instance_normalization", "layer": "layer_normalization",
                "rms": "rms_normalization"}
"""Keras' automatic name bases of the normalization layers."""


def input_size(opts: PhazeAConfig) -> int:
    """The encoder's default size (1024 px for fs_original) scaled by `enc_scaling` %, rounded
    down to 16, at least the encoder's minimum (NASNet: its default size for ImageNet weights)."""
    if opts.enc_architecture != "fs_original":
        return encoders.input_size(opts.enc_architecture, opts.enc_scaling, opts.enc_load_weights)
    return int(max(32, ((1024 * (opts.enc_scaling / 100)) // 16) * 16))


class KerasNames:
    """Keras' automatic layer names (`dense`, `dense_1`, ...), counted per base over one build."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def __call__(self, base: str) -> str:
        index = self._counts[base]
        self._counts[base] += 1
        return f"{base}_{index}" if index else base

    def skip_taken(self, names: list[str]) -> None:
        """Counts the automatic names a nested Keras model used (`dense`, `conv2d_3`, ...)."""
        for name in names:
            base, _, index = name.rpartition("_")
            if not index.isdigit():
                base, index = name, "0"
            if base in self._BASES:
                self._counts[base] = max(self._counts[base], int(index) + 1)

    _BASES = frozenset({"dense", "conv2d", "gaussian_noise", *_NORM_LAYERS.values()})


class PhazeA(nn.Module):
    """Wires Phaze-A's sub-models; absent ones are None. Side A and side B differ only in the
    sub-models picked for them (`fc_{side}`, `g_block_{side}`, `decoder_{side}`)."""

    encoder: nn.Module
    fc_a: nn.Module | None = None
    fc_b: nn.Module | None = None
    fc_both: nn.Module | None = None
    fc_shared: nn.Module | None = None
    fc_gblock: nn.Module | None = None
    g_block_a: nn.Module | None = None
    g_block_b: nn.Module | None = None
    g_block_both: nn.Module | None = None
    decoder_a: nn.Module | None = None
    decoder_b: nn.Module | None = None
    decoder_both: nn.Module | None = None
    shared_fc: str = "none"

    def _pick(self, kind: str, side: str) -> nn.Module:
        both = getattr(self, f"{kind}_both")
        return both if both is not None else getattr(self, f"{kind}_{side}")

    def _decode(self, face: jax.Array, side: str) -> dict[str, Any]:
        encoded = self.encoder(face)
        inter = self._pick("fc", side)(encoded)
        if self.shared_fc != "none":  # "half" reuses side A's (or the combined) fc model
            shared = self.fc_shared if self.shared_fc == "full" else self._pick("fc", "a")
            inter = layers.concatenate([inter, shared(encoded)], name=f"inter_{side}")
        if self.fc_gblock is not None:
            inter = self._pick("g_block", side)(inter, self.fc_gblock(encoded))
        return self._pick("decoder", side)(inter)

    def __call__(self, face_a: jax.Array, face_b: jax.Array) -> dict[str, dict[str, Any]]:
        return {"a": self._decode(face_a, "a"), "b": self._decode(face_b, "b")}

    def swap(self, face: jax.Array, *, to_side: str) -> dict[str, Any]:
        """Decodes `face` through `to_side`'s sub-models (the A->B convert path uses "b")."""
        return self._decode(face, to_side)


def _out_channels(up: Upscaler, channels: int) -> int:
    if up.method == "upsample2d":
        return channels
    if up.method == "upscale_hybrid":  # concat of two halves: F + 1 for odd F
        return 2 * (up.filters - int(up.filters * 0.5))
    return up.filters


class _Planner:
    """Walks Faceswap's build order once: hands out layer names (block counters and Keras'
    automatic names) and tracks shapes to size and check each layer."""

    def __init__(self, opts: PhazeAConfig, learn_mask: bool, reflect_padding: bool,
                 compat: bool = False) -> None:
        self.o, self.learn_mask, self.reflect, self.compat = (opts, learn_mask, reflect_padding,
                                                              compat)
        self.names, self.auto = blocks.Namer(), KerasNames()
        self.dec_filters: list[int] | None = None

    def encoder(self, size: int) -> tuple[dict[str, Any], Shape]:
        o = self.o
        if o.enc_architecture != "fs_original":
            spec = backbone.plan(o.enc_architecture, size, load_weights=o.enc_load_weights,
                                 mobilenet_width=o.mobilenet_width,
                                 mobilenet_depth=o.mobilenet_depth,
                                 mobilenet_minimalistic=o.mobilenet_minimalistic,
                                 faceswap_compat=self.compat)
            shape, names = backbone.describe(spec, size)
            self.auto.skip_taken(names)
            fields: dict[str, Any] = {"backbone": spec}
            if o.bottleneck_in_encoder:
                fields["bottleneck"], shape = self.bottleneck(shape)
            return fields, shape
        filters, dim, convs = o.fs_original_min_filters, size, []
        if o.fs_original_use_alt:
            convs.append(ConvSpec(self.names(f"conv_{filters}"), filters, 1, 1, 0.2))
        for i in range(o.fs_original_depth):
            if not o.fs_original_use_alt:
                convs.append(ConvSpec(f"fs_enc_convblk_{i}", filters, 5, 2, 0.1))
                channels, dim = filters, -(-dim // 2)
                filters = min(o.fs_original_max_filters, filters * 2)
                continue
            convs.append(ConvSpec(f"fs_dny_enc_convblk_{i}", filters, 3, 1, 0.2))
            filters = channels = min(o.fs_original_max_filters, filters * 2)
            last = i == o.fs_original_depth - 1
            convs.append(ConvSpec(f"fs_dny_enc_convblk_{i}_1", filters, 4 if last else 3, 1, 0.2,
                                  valid=last, pool="" if last else f"fs_dny_enc_pool_{i}"))
            if dim < (4 if last and not self.reflect else 2):
                raise ConfigError(
                    f"model.phaze_a.fs_original_depth={o.fs_original_depth} is too deep for the "
                    f"{size} px input (enc_scaling={o.enc_scaling}): the DNY encoder halves it "
                    "per level and needs at least 4 px left for its last 4x4 conv")
            dim = (dim if self.reflect else dim - 3) if last else dim // 2
        fields = {"convs": tuple(convs)}
        shape = (dim, dim, channels)
        if o.bottleneck_in_encoder:
            fields["bottleneck"], shape = self.bottleneck(shape)
        return fields, shape

    def bottleneck(self, shape: Shape) -> tuple[Bottleneck, Shape]:
        o = self.o
        dense = self.auto("dense")  # created whatever the bottleneck type
        norm = None
        if o.bottleneck_norm != "none":
            norm = (o.bottleneck_norm, self.auto(_NORM_LAYERS[o.bottleneck_norm]))
        units = {"dense": o.bottleneck_size, "flatten": math.prod(shape)}.get(
            o.bottleneck_type, shape[-1])
        return Bottleneck(o.bottleneck_type, o.bottleneck_size, dense, norm), (units,)

    def scale_filters(self, filters: int, final: int) -> int:
        """Faceswap's `_scale_filters`: fewer filters so a `final`-sized map reshapes to a size
        that doubles up to the output size."""
        scaled = scale_dim(self.o.output_size, final)
        if scaled == final:
            return filters
        modifier = final ** 2 * scaled ** 2
        filters = int(int((final ** 2 * filters // modifier) * modifier) / final ** 2)
        if filters < 1:
            raise ConfigError(
                f"model.phaze_a: the fully connected filters scale down to nothing for "
                f"output_size={self.o.output_size}: fc_dimensions x (fc_upsamples + 1) = {final} "
                "is too large for it")
        return filters

    def upscaler(self, method: str, filters: int) -> Upscaler:
        if method == "upsample2d":
            return Upscaler(method)
        if method in ("upscale_fast", "upscale_hybrid"):
            fast = method == "upscale_fast"
            name = self.names(f"upscale2x_{filters}_{'fast' if fast else 'hyb'}")
            inner = filters if fast else filters - int(filters * 0.5)
            return Upscaler(method, filters, name, self.names(f"upscale_{inner}"))
        base = {"subpixel": "upscale", "upscale_dny": "upscale_dny",
                "resize_images": "upscale_ri"}[method]
        return Upscaler(method, filters, self.names(f"{base}_{filters}"))

    def fully_connected(self, side: str, shape: Shape) -> tuple[dict[str, Any], Shape]:
        o = self.o
        final = o.fc_dimensions * (o.fc_upsamples + 1)
        if side == "gblock":
            nodes = get_curve(o.fc_gblock_min_nodes, o.fc_gblock_max_nodes, o.fc_gblock_depth,
                              o.fc_gblock_filter_slope)
            fields: dict[str, Any] = {"dropout": o.fc_gblock_dropout}
        else:
            area = o.fc_dimensions ** 2
            max_nodes = int(self.scale_filters(o.fc_max_filters, final) * area)
            nodes = get_curve(int(self.scale_filters(o.fc_min_filters, final) * area), max_nodes,
                              o.fc_depth, o.fc_filter_slope)
            fields = {"dropout": o.fc_dropout}
        if not o.bottleneck_in_encoder:
            fields["bottleneck"], shape = self.bottleneck(shape)
        fields["dense"] = tuple((self.auto("dense"), units) for units in nodes)
        shape = (nodes[-1],) if nodes else shape
        if side == "gblock":
            return fields, shape
        if math.prod(shape) != max_nodes:
            raise ConfigError(
                f"model.phaze_a: the fully connected model ends with {math.prod(shape)} units but "
                f"reshapes to fc_dimensions={o.fc_dimensions} squared x {max_nodes // area} "
                f"filters ({max_nodes} units, fc_max_filters scaled for output_size="
                f"{o.output_size}); Faceswap cannot build this either (with fc_depth=1 the one "
                "Dense uses fc_min_filters, so make it equal to fc_max_filters)")
        shape = fields["reshape"] = (o.fc_dimensions, o.fc_dimensions, max_nodes // area)
        if o.fc_upsampler == "upsample2d" and o.fc_upsamples > 1:  # one bilinear UpSampling2D
            ups = [Upscaler("upsample2d", size=2 ** o.fc_upsamples, interpolation="bilinear")]
        else:
            filters = self.scale_filters(o.fc_upsample_filters, final)
            ups = [self.upscaler(o.fc_upsampler, filters) for _ in range(o.fc_upsamples)]
        for up in ups:
            shape = (shape[0] * up.size, shape[1] * up.size, _out_channels(up, shape[-1]))
        fields["upsamplers"] = tuple(ups)
        fields["upsample_relu"] = o.fc_upsampler == "upsample2d"
        if o.dec_upscales_in_fc:
            fields["face"], fields["mask"], shape = self.upscale_blocks(
                0, o.dec_upscales_in_fc, shape)
        return fields, shape

    def _reshape_for_output(self, shape: Shape) -> tuple[tuple[int, int, int] | None, Shape]:
        new = scale_dim(self.o.output_size, shape[0])
        if new == shape[0]:
            return None, shape
        total = math.prod(shape)
        if total % (new * new) or total < new * new:
            raise ConfigError(
                f"model.phaze_a: the decoder input {'x'.join(map(str, shape))} cannot be "
                f"reshaped to {new}x{new} for output_size={self.o.output_size}; Faceswap cannot "
                "build this either (change fc_dimensions, fc_upsamples or output_size)")
        return (new, new, total // (new * new)), (new, new, total // (new * new))

    def _norm(self, channels: int) -> tuple[str, str] | None:
        kind = self.o.dec_norm
        if kind == "none":
            return None
        if kind == "group" and channels % 32:
            raise ConfigError(f"model.phaze_a.dec_norm='group' needs upscale widths that are "
                              f"multiples of its 32 groups, got {channels} filters (raise "
                              "dec_min_filters or pick another dec_norm)")
        return kind, self.auto(_NORM_LAYERS[kind])

    def _stage(self, filters: int, channels: int, skip_residual: bool, is_mask: bool) -> Stage:
        o = self.o
        up = self.upscaler(o.dec_upscale_method, filters)
        norm = self._norm(_out_channels(up, channels))
        noise = self.auto("gaussian_noise") if o.dec_gaussian and not is_mask else ""
        if not is_mask and o.dec_res_blocks and not skip_residual:
            residuals = tuple(self.names(f"residual_{filters}") for _ in range(o.dec_res_blocks))
            return Stage(up, noise, norm, 0.2, residuals)
        relu = None if o.dec_upscale_method == "upscale_dny" else 0.1
        return Stage(up, noise, norm, relu)

    def upscale_blocks(self, start: int, end: int | None,
                       shape: Shape) -> tuple[Chain, Chain | None, Shape]:
        """Faceswap's UpscaleBlocks for upscales `start:end` (face chain, mask chain or None)."""
        o, dny = self.o, self.o.dec_upscale_method == "upscale_dny"
        head: dict[str, Any] = {}
        mask_head: dict[str, Any] = {}
        if start == 0:
            head["reshape"], shape = self._reshape_for_output(shape)
            mask_head["reshape"] = head["reshape"]
            if dny:
                entry = (f"conv_{o.dec_max_filters}",) * 2
                head.update(entry=tuple(map(self.names, entry)), entry_filters=o.dec_max_filters)
                if self.learn_mask:
                    mask_head.update(entry=tuple(map(self.names, entry)),
                                     entry_filters=o.dec_max_filters)
                shape = (*shape[:2], o.dec_max_filters)
        if self.dec_filters is None:
            ratio = o.output_size / shape[0]
            count = int(np.log2(ratio)) if ratio >= 1 else -1
            self.dec_filters = get_curve(o.dec_max_filters, o.dec_min_filters, count,
                                         o.dec_filter_slope, o.dec_slope_mode) if count >= 0 else []
            if count < 0 or shape[0] * 2 ** len(self.dec_filters) != o.output_size:
                raise ConfigError(
                    f"model.phaze_a: the decoder starts at {shape[0]} px, which doubling cannot "
                    f"turn into output_size={o.output_size}; Faceswap cannot build this either "
                    "(change fc_dimensions, fc_upsamples, dec_upscales_in_fc or output_size)")
        faces: list[Stage] = []
        masks: list[Stage] = []
        filters = self.dec_filters[start:end]
        for idx, width in enumerate(filters):
            skip = idx == len(filters) - 1 and o.dec_skip_last_residual
            faces.append(self._stage(width, shape[-1], skip, is_mask=False))
            if self.learn_mask:
                masks.append(self._stage(width, shape[-1], skip, is_mask=True))
            shape = (shape[0] * 2, shape[1] * 2, _out_channels(faces[-1].upscaler, shape[-1]))
        mask = Chain(**mask_head, stages=tuple(masks)) if self.learn_mask else None
        return Chain(**head, stages=tuple(faces)), mask, shape

    def g_block(self, channels: int) -> dict[str, Any]:
        fields: dict[str, Any] = {"style_dense": tuple(self.auto("dense") for _ in range(3))}
        fields["conv"] = self.names(f"conv2d_{channels}")
        fields["noise"] = self.auto("gaussian_noise")
        recursions = []
        for i in range(2):
            beta, gamma = self.auto("dense"), self.auto("dense")
            noise, noise_conv = self.auto("gaussian_noise"), self.auto("conv2d")
            conv = self.auto("conv2d") if i else None
            recursions.append(Recursion(beta, gamma, noise, noise_conv, conv))
        fields["recursions"] = tuple(recursions)
        return fields

    def decoder(self, shape: Shape) -> dict[str, Any]:
        o = self.o
        face, mask, _ = self.upscale_blocks(o.dec_upscales_in_fc, None, shape)
        fields = {"face": face, "mask": mask, "kernel": o.dec_output_kernel,
                  "face_out": self.names("face_out")}
        if self.learn_mask:
            fields["mask_out"] = self.names("mask_out")
        return fields


def build(config: ExperimentConfig) -> ModelSpec:
    """Builds Phaze-A with Faceswap's sub-models and layer names, in its build order."""
    o, learn_mask = config.model.phaze_a, config.loss.learn_mask
    if learn_mask and o.dec_upscales_in_fc and (o.shared_fc != "none" or o.enable_gblock):
        raise ConfigError("model.phaze_a: learn_mask with dec_upscales_in_fc > 0 works only "
                          "without shared_fc and the G-Block (enable_gblock=False), whose "
                          "inputs would mix the face and mask branches")
    opts = model_options(config)
    plan = _Planner(o, learn_mask, config.model.reflect_padding, o.faceswap_compat)
    size = input_size(o)
    fields, encoded = plan.encoder(size)
    pretrained = fields.get("backbone")
    keras_encoder, unmatched = backbone.freeze_path(pretrained, o.faceswap_compat)
    frozen = config.train.freeze_weights and (
        "encoder" in config.train.freeze_layers or "keras_encoder" in config.train.freeze_layers
        and bool(keras_encoder))
    subs: dict[str, Any] = {"encoder": Encoder(**fields, opts=opts, frozen_backbone=frozen)}
    for side in ("a", "b") if o.split_fc else ("both",):
        fields, inter = plan.fully_connected(side, encoded)
        subs[f"fc_{side}"] = FullyConnected(**fields, opts=opts)
    if o.shared_fc == "full":
        subs["fc_shared"] = FullyConnected(**plan.fully_connected("shared", encoded)[0], opts=opts)
    if o.shared_fc != "none":
        inter = (*inter[:-1], 2 * inter[-1])
    if o.enable_gblock:
        subs["fc_gblock"] = FullyConnected(**plan.fully_connected("gblock", encoded)[0], opts=opts)
        for side in ("a", "b") if o.split_gblock else ("both",):
            subs[f"g_block_{side}"] = GBlock(**plan.g_block(inter[-1]), opts=opts)
    for side in ("a", "b") if o.split_decoders else ("both",):
        subs[f"decoder_{side}"] = Decoder(**plan.decoder(inter), opts=opts)
    module = PhazeA(**subs, shared_fc=o.shared_fc)
    return ModelSpec(module, "phaze_a", size, (o.output_size,), learn_mask,
                     keras_encoder=keras_encoder, keras_encoder_unmatched=unmatched,
                     pretrained=pretrained)
