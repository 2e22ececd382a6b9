"""Each model plugin's own locked options (`[model.<plugin>]` in Faceswap), held by
`ModelConfig` under the plugin's name (reference/models.md §2)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from fsjax.config.checks import ConfigError, _check_choice, _check_range

MODEL_PLUGINS = ("dfaker", "dfl_h128", "dfl_sae", "dlight", "iae", "lightweight", "original",
                 "phaze_a", "realface", "unbalanced", "villain")
"""Faceswap's model plugins; `fsjax.models.<name>` implements each."""


@dataclasses.dataclass(frozen=True)
class DfakerConfig:
    """Faceswap's `[model.dfaker]` options (reference/models.md §2.4)."""

    output_size: Literal[128, 256] = 128
    """Output size, 128 or 256; the input is half of it."""

    def __post_init__(self) -> None:
        _check_choice("model.dfaker.output_size", self.output_size,
                      PLUGIN_CHOICES["dfaker"]["output_size"])


@dataclasses.dataclass(frozen=True)
class DflSaeConfig:
    """Faceswap's `[model.dfl_sae]` options (reference/models.md §2.6)."""

    input_size: int = 128
    """Input and largest output size (64..256, a multiple of 16)."""
    architecture: Literal["df", "liae"] = "df"
    """df: one decoder per side; liae: shared decoder, identity in the intermediates."""
    autoencoder_dims: int = 0
    """Bottleneck width (0: 512 for df, 256 for liae)."""
    encoder_dims: int = 42
    """Encoder width; the convs have 3x, 6x, 12x and 24x this many filters (21..85)."""
    decoder_dims: int = 21
    """Decoder width (10..85)."""
    multiscale_decoder: bool = False
    """Also output faces at 1/4 and 1/2 size, each trained against the resized target."""

    def __post_init__(self) -> None:
        _check_range("model.dfl_sae.input_size", self.input_size, 64, 256)
        if self.input_size % 16:
            raise ConfigError(f"model.dfl_sae.input_size={self.input_size} must be a multiple "
                              "of 16")
        _check_choice("model.dfl_sae.architecture", self.architecture,
                      PLUGIN_CHOICES["dfl_sae"]["architecture"])
        _check_range("model.dfl_sae.autoencoder_dims", self.autoencoder_dims, 0, 1024)
        _check_range("model.dfl_sae.encoder_dims", self.encoder_dims, 21, 85)
        _check_range("model.dfl_sae.decoder_dims", self.decoder_dims, 10, 85)


@dataclasses.dataclass(frozen=True)
class RealfaceConfig:
    """Faceswap's `[model.realface]` options (reference/models.md §2.8)."""

    input_size: int = 64
    """Input size (64..128, a multiple of 16); does not change the output size."""
    output_size: int = 128
    """Output size (64..256, a multiple of 32)."""
    dense_nodes: int = 1536
    """Width of decoder B's first Dense layer; decoder A's is two thirds of it (768..2048)."""
    complexity_encoder: int = 128
    """Filters of the first encoder conv; doubled three times (96..160)."""
    complexity_decoder: int = 512
    """Filters of decoder B's first upscale after the dense stage; A uses two thirds (512..544)."""

    def __post_init__(self) -> None:
        _check_range("model.realface.input_size", self.input_size, 64, 128)
        if self.input_size % 16:
            raise ConfigError(f"model.realface.input_size={self.input_size} must be a multiple "
                              "of 16 (64..128)")
        _check_range("model.realface.output_size", self.output_size, 64, 256)
        if self.output_size % 32:  # Faceswap's code requires 32 (its help text says 16)
            raise ConfigError(f"model.realface.output_size={self.output_size} must be a "
                              "multiple of 32 (64..256)")
        _check_range("model.realface.dense_nodes", self.dense_nodes, 768, 2048)
        _check_range("model.realface.complexity_encoder", self.complexity_encoder, 96, 160)
        _check_range("model.realface.complexity_decoder", self.complexity_decoder, 512, 544)


@dataclasses.dataclass(frozen=True)
class UnbalancedConfig:
    """Faceswap's `[model.unbalanced]` options (reference/models.md §2.9). Its `lowmem` is
    `model.lowmem`, which replaces nodes and both complexities with fixed smaller values."""

    input_size: int = 128
    """Input and output size (64..512, a multiple of 64)."""
    nodes: int = 1024
    """Width of the encoder's first Dense layer (512..4096)."""
    complexity_encoder: int = 128
    """Filters of the first encoder conv; the others have 2, 4, 6 and 8 times as many (64..1024)."""
    complexity_decoder_a: int = 384
    """Filters of decoder A's first upscales (64..1024)."""
    complexity_decoder_b: int = 512
    """Filters of decoder B's first upscales (64..1024)."""

    def __post_init__(self) -> None:
        _check_range("model.unbalanced.input_size", self.input_size, 64, 512)
        if self.input_size % 64:
            raise ConfigError(f"model.unbalanced.input_size={self.input_size} must be a "
                              "multiple of 64 (64..512)")
        _check_range("model.unbalanced.nodes", self.nodes, 512, 4096)
        for option in ("complexity_encoder", "complexity_decoder_a", "complexity_decoder_b"):
            _check_range(f"model.unbalanced.{option}", getattr(self, option), 64, 1024)


@dataclasses.dataclass(frozen=True)
class DlightConfig:
    """Faceswap's `[model.dlight]` options (reference/models.md §2.10). Input is always 128."""

    features: Literal["lowmem", "fair", "best"] = "best"
    """Encoder size: 48 (lowmem) or 64 base filters, bottleneck 640 / 1152 / 1664 units."""
    details: Literal["fast", "good"] = "good"
    """Decoder B: `good` has residual blocks and BatchNorm; `fast` plain upscales
    (`decoder_b_fast`)."""
    output_size: Literal[128, 256, 384] = 256
    """Output size; the decoders' first upscale grows 4x4 by 2, 4 or 6 times."""

    def __post_init__(self) -> None:
        for option, allowed in PLUGIN_CHOICES["dlight"].items():
            _check_choice(f"model.dlight.{option}", getattr(self, option), allowed)


PHAZE_A_PRETRAINED_ENCODERS = (
    "clipv_farl-b-16-16", "clipv_farl-b-16-64", "clipv_vit-b-16", "clipv_vit-b-32",
    "clipv_vit-l-14", "clipv_vit-l-14-336px", "convnext_base", "convnext_extra_large",
    "convnext_large", "convnext_small", "convnext_tiny", "densenet121", "densenet169",
    "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "inception_resnet_v2",
    "inception_v3", "mobilenet", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "nasnet_large", "nasnet_mobile", "resnet101", "resnet101_v2", "resnet152", "resnet152_v2",
    "resnet50", "resnet50_v2", "vgg16", "vgg19", "xception")
"""Phaze-A encoders built on Keras-Applications / CLIP networks (`fsjax.models.encoders`)."""
FSJAX_ONLY_OPTIONS = ("enc_weights_path", "faceswap_compat")
"""Plugin options of fsjax's own: not written into Faceswap's state file."""
PHAZE_A_UPSCALERS = ("subpixel", "resize_images", "upscale_fast", "upscale_hybrid",
                     "upscale_dny")


@dataclasses.dataclass(frozen=True)
class PhazeAConfig:
    """Faceswap's `[model.phaze_a]` options (reference/models.md §2.11). Names, defaults and
    ranges are Faceswap's; `fsjax.models.phaze_a_presets` has its
    presets. Weight freezing/loading options live elsewhere."""

    output_size: int = 128
    """Output size (64..2048, a multiple of 16)."""
    shared_fc: Literal["none", "full", "half"] = "none"
    """Extra shared fully connected model, concatenated to each side's: none, full (its own
    `fc_shared`, IAE style) or half (reuse `fc_a`/`fc_both`, DFL-LIAE style)."""
    enable_gblock: bool = True
    """Add the G-Block (StyleGAN-like AdaIN block fed by a shared `fc_gblock`) before the
    decoder."""
    split_fc: bool = True
    """One fully connected model per side (`fc_a`, `fc_b`) instead of one `fc_both`."""
    split_gblock: bool = False
    """One G-Block per side (`g_block_a`, `g_block_b`) instead of one `g_block_both`."""
    split_decoders: bool = False
    """One decoder per side (`decoder_a`, `decoder_b`) instead of one `decoder_both`."""
    enc_architecture: str = "fs_original"
    """Encoder: Faceswap's own `fs_original`, or a Keras-Applications / CLIP network
    (`PHAZE_A_PRETRAINED_ENCODERS`, `fsjax.models.encoders`)."""
    enc_scaling: int = 7
    """Input size as a percentage of the encoder's default size (1024 px for fs_original, 224 px
    for ResNet50, ...), rounded down to 16 px, at least the encoder's minimum (0..200; 7 gives
    64 px with fs_original)."""
    enc_load_weights: bool = True
    """Start a new model from the encoder's ImageNet (or CLIP) weights, read from a file the
    user has (`enc_weights_path`, else `~/.keras/models/`); no effect on `fs_original`."""
    enc_weights_path: str = ""
    """fsjax's own: the weights file, or the folder holding it, for `enc_load_weights` ("" looks
    in `$KERAS_HOME/models`, default `~/.keras/models`). fsjax never downloads."""
    mobilenet_width: float = 1.0
    """MobileNet v1/v2/v3 width multiplier (Keras' `alpha`, 0.1..2.0)."""
    mobilenet_depth: int = 1
    """MobileNet v1 depth multiplier of its depthwise convs (1..10)."""
    mobilenet_dropout: float = 0.001
    """MobileNet v1 dropout (only used by Keras' classification top, which Phaze-A drops)."""
    mobilenet_minimalistic: bool = False
    """MobileNet v3 minimalistic variant (no squeeze-excite, hard-swish or 5x5 kernels)."""
    faceswap_compat: bool = False
    """fsjax's own: reproduce Faceswap's verified Phaze-A bugs (docs/compat.md): MobileNetV3
    ignores the MobileNet options and keeps Keras' 0..255 preprocessing; `keras_encoder` in
    `freeze_layers` freezes nothing when the case of the Keras model's name differs."""
    bottleneck_type: Literal["dense", "average_pooling", "max_pooling", "flatten"] = "dense"
    """Bottleneck layer after the encoder convs."""
    bottleneck_norm: Literal["none", "instance", "layer", "rms"] = "none"
    """Normalization before the bottleneck."""
    bottleneck_size: int = 1024
    """Units of a dense bottleneck (128..4096)."""
    bottleneck_in_encoder: bool = True
    """Bottleneck at the end of the shared encoder; else each fully connected model has one."""
    fc_depth: int = 1
    """Dense layers in each fully connected model (0..16)."""
    fc_min_filters: int = 1024
    """Filters (x fc_dimensions^2 nodes) of the first Dense, scaled down for the output size
    (16..5120)."""
    fc_max_filters: int = 1024
    """Filters of the last Dense and the reshape, scaled down for the output size (128..5120)."""
    fc_dimensions: int = 4
    """Height and width of the reshape after the Dense layers (1..16)."""
    fc_filter_slope: float = -0.5
    """Curve of the Dense widths from min to max: < 0 changes fast first (-0.99..0.99)."""
    fc_dropout: float = 0.0
    """Dropout before each Dense (0..0.99); Faceswap lets it change on resume."""
    fc_upsampler: Literal["upsample2d", "subpixel", "resize_images", "upscale_fast",
                          "upscale_hybrid"] = "upsample2d"
    """Upsampling at the end of the fully connected models."""
    fc_upsamples: int = 1
    """Number of 2x upsamples in the fully connected models (0..4)."""
    fc_upsample_filters: int = 512
    """Filters of learned fc upsamplers, scaled down for the output size (128..5120)."""
    fc_gblock_depth: int = 3
    """Dense layers in `fc_gblock` (1..16)."""
    fc_gblock_min_nodes: int = 512
    """Units of `fc_gblock`'s first Dense (128..5120)."""
    fc_gblock_max_nodes: int = 512
    """Units of `fc_gblock`'s last Dense (128..5120)."""
    fc_gblock_filter_slope: float = -0.5
    """Curve of `fc_gblock`'s Dense widths (-0.99..0.99)."""
    fc_gblock_dropout: float = 0.0
    """Dropout before each `fc_gblock` Dense (0..0.99)."""
    dec_upscale_method: Literal["subpixel", "resize_images", "upscale_fast", "upscale_hybrid",
                                "upscale_dny"] = "subpixel"
    """Upscale block of the decoders."""
    dec_upscales_in_fc: int = 0
    """How many of the first decoder upscales run at the end of the fully connected models
    (0..6)."""
    dec_norm: Literal["none", "batch", "group", "instance", "layer", "rms"] = "none"
    """Normalization after each decoder upscale."""
    dec_min_filters: int = 64
    """Filters of the last decoder upscale (16..512)."""
    dec_max_filters: int = 512
    """Filters of the first decoder upscale (256..5120)."""
    dec_slope_mode: Literal["full", "cap_max", "cap_min"] = "full"
    """How the decoder filters fall: a full curve from max to min, or a fixed ratio per upscale
    padded with max at the start (cap_max) or min at the end (cap_min)."""
    dec_filter_slope: float = -0.45
    """Curve (full) or the per-upscale reduction |slope| (cap modes) (-0.99..0.99)."""
    dec_res_blocks: int = 1
    """Residual blocks after each decoder upscale (0..8)."""
    dec_output_kernel: int = 5
    """Kernel size of the output convolutions (1..9)."""
    dec_gaussian: bool = True
    """Gaussian noise (stddev 1) after each decoder upscale while training."""
    dec_skip_last_residual: bool = True
    """No residual blocks after the last upscale."""
    fs_original_depth: int = 4
    """Encoder conv blocks (2..10)."""
    fs_original_min_filters: int = 128
    """Filters of the first encoder conv, doubled per block (16..2048)."""
    fs_original_max_filters: int = 1024
    """Cap on the encoder conv filters (256..8192)."""
    fs_original_use_alt: bool = False
    """The DNY variant of the encoder: stride-1 3x3 convs and max pooling."""

    def __post_init__(self) -> None:
        p = "model.phaze_a."
        _check_range(p + "output_size", self.output_size, 64, 2048)
        if self.output_size % 16:
            raise ConfigError(f"{p}output_size={self.output_size} must be a multiple of 16 "
                              "(64..2048)")
        for option, allowed in PLUGIN_CHOICES["phaze_a"].items():
            _check_choice(p + option, getattr(self, option), allowed)
        ranges = {"enc_scaling": (0, 200), "bottleneck_size": (128, 4096), "fc_depth": (0, 16),
                  "fc_min_filters": (16, 5120), "fc_max_filters": (128, 5120),
                  "fc_dimensions": (1, 16), "fc_filter_slope": (-0.99, 0.99),
                  "fc_dropout": (0.0, 0.99), "fc_upsamples": (0, 4),
                  "fc_upsample_filters": (128, 5120), "fc_gblock_depth": (1, 16),
                  "fc_gblock_min_nodes": (128, 5120), "fc_gblock_max_nodes": (128, 5120),
                  "fc_gblock_filter_slope": (-0.99, 0.99), "fc_gblock_dropout": (0.0, 0.99),
                  "dec_upscales_in_fc": (0, 6), "dec_min_filters": (16, 512),
                  "dec_max_filters": (256, 5120), "dec_filter_slope": (-0.99, 0.99),
                  "dec_res_blocks": (0, 8), "dec_output_kernel": (1, 9),
                  "fs_original_depth": (2, 10), "fs_original_min_filters": (16, 2048),
                  "fs_original_max_filters": (256, 8192), "mobilenet_width": (0.1, 2.0),
                  "mobilenet_depth": (1, 10), "mobilenet_dropout": (0.0, 0.999)}
        for option, (low, high) in ranges.items():
            _check_range(p + option, getattr(self, option), low, high)


# Every plugin option that takes one of a fixed set of values, with that set (also what a state
# file may hold for it, once Faceswap 2's null is read as "none").
PLUGIN_CHOICES: dict[str, dict[str, tuple]] = {
    "dfaker": {"output_size": (128, 256)},
    "dfl_sae": {"architecture": ("df", "liae")},
    "dlight": {"features": ("lowmem", "fair", "best"), "details": ("fast", "good"),
               "output_size": (128, 256, 384)},
    "phaze_a": {"enc_architecture": ("fs_original",) + PHAZE_A_PRETRAINED_ENCODERS,
                "shared_fc": ("none", "full", "half"),
                "bottleneck_type": ("dense", "average_pooling", "max_pooling", "flatten"),
                "bottleneck_norm": ("none", "instance", "layer", "rms"),
                "fc_upsampler": ("upsample2d",) + PHAZE_A_UPSCALERS[:-1],
                "dec_upscale_method": PHAZE_A_UPSCALERS,
                "dec_norm": ("none", "batch", "group", "instance", "layer", "rms"),
                "dec_slope_mode": ("full", "cap_max", "cap_min")},
}
