"""Faceswap's Phaze-A presets (`lib/gui/.cache/presets/train/model_phaze_a_*_preset.json`).

Each preset re-creates a classic model inside Phaze-A. They are written here as the options that
differ from Phaze-A's defaults (`PhazeAConfig`); the values are Faceswap's. The presets built
on a pretrained encoder (clipfaker128/256/448: CLIP FaRL-B-16-64, stojo: EfficientNet-B4,
sym384: EfficientNetV2-S) load its ImageNet/CLIP weights (`enc_load_weights`, from a file the
user has) and name `keras_encoder` in `freeze_layers` (`PRETRAINED_PRESETS`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fsjax.config import ConfigError, PhazeAConfig

# Shared by every preset below: no G-Block, no decoder noise, no ImageNet weights.
_PLAIN = {"enable_gblock": False, "enc_load_weights": False, "dec_gaussian": False}
# The classic models' shape: one fc model, a decoder per side, sub-pixel upscales.
_CLASSIC = {**_PLAIN, "split_fc": False, "split_decoders": True, "fc_upsampler": "subpixel"}
# No residual blocks in the decoders.
_NO_RESIDUALS = {"dec_res_blocks": 0, "dec_skip_last_residual": False}
# The DFL models: 128 px input (enc_scaling 13), 8x8 fc reshape, 512 fc filters, 128 last filters.
_DFL = {"enc_scaling": 13, "fc_dimensions": 8, "fc_min_filters": 512, "fc_max_filters": 512,
        "dec_min_filters": 128, "dec_filter_slope": -0.33, "dec_skip_last_residual": False}
# SAE: encoder filters 126 -> 1008, decoder 504 -> 128 with two residual blocks per upscale.
_SAE = {**_DFL, "fs_original_min_filters": 126, "fs_original_max_filters": 1008,
        "dec_max_filters": 504, "dec_res_blocks": 2}
# SAEHD: 64 -> 512 encoder filters, bottleneck of 256 in each fc model, 1x1 output conv.
_SAEHD = {**_DFL, "fs_original_min_filters": 64, "fs_original_max_filters": 512,
          "bottleneck_size": 256, "bottleneck_in_encoder": False, "dec_output_kernel": 1}
# DNY: alternative encoder, no fc Dense (the 512 bottleneck reshaped to 1x1, bilinear x4), DNY
# upscales falling by half from 512 to 16 (cap_max), 1x1 output conv.
_DNY = {**_CLASSIC, **_NO_RESIDUALS, "fs_original_use_alt": True, "fs_original_min_filters": 16,
        "fs_original_max_filters": 512, "bottleneck_size": 512, "fc_depth": 0,
        "fc_min_filters": 512, "fc_max_filters": 512, "fc_dimensions": 1, "fc_filter_slope": 0.0,
        "fc_upsampler": "upsample2d", "fc_upsamples": 2, "fc_upsample_filters": 128,
        "fc_gblock_depth": 1, "fc_gblock_min_nodes": 128, "fc_gblock_max_nodes": 128,
        "fc_gblock_filter_slope": 0.0, "dec_upscale_method": "upscale_dny",
        "dec_min_filters": 16, "dec_slope_mode": "cap_max", "dec_filter_slope": 0.5,
        "dec_output_kernel": 1}

PRESETS: dict[str, dict[str, Any]] = {
    "original": {**_CLASSIC, **_NO_RESIDUALS, "output_size": 64, "dec_max_filters": 256,
                 "dec_filter_slope": -0.33},
    "lightweight": {**_CLASSIC, **_NO_RESIDUALS, "output_size": 64, "fs_original_depth": 3,
                    "fs_original_max_filters": 512, "bottleneck_size": 512,
                    "fc_min_filters": 512, "fc_max_filters": 512, "fc_upsample_filters": 256,
                    "dec_min_filters": 128, "dec_filter_slope": -0.33},
    "iae": {**_PLAIN, **_NO_RESIDUALS, "output_size": 64, "shared_fc": "full",
            "bottleneck_in_encoder": False, "fc_min_filters": 512, "fc_max_filters": 512,
            "fc_upsampler": "subpixel", "fc_upsamples": 0},
    "dfaker": {**_CLASSIC},
    "dfl_h128": {**_CLASSIC, **_DFL, "bottleneck_size": 512, "dec_res_blocks": 0},
    "dfl_sae_df": {**_CLASSIC, **_SAE, "bottleneck_size": 512},
    "dfl_sae_liae": {**_PLAIN, **_SAE, "fc_upsampler": "subpixel", "shared_fc": "half",
                     "bottleneck_size": 256, "bottleneck_in_encoder": False},
    "dfl_saehd_df": {**_CLASSIC, **_SAEHD, "fc_min_filters": 256, "fc_max_filters": 256,
                     "fc_upsample_filters": 256},
    "dfl_saehd_liae": {**_PLAIN, **_SAEHD, "fc_upsampler": "subpixel", "shared_fc": "half"},
    "dny256": {**_DNY, "output_size": 256, "enc_scaling": 25, "fs_original_depth": 7,
               "dec_upscales_in_fc": 1},
    "dny512": {**_DNY, "output_size": 512, "enc_scaling": 50, "fs_original_depth": 8,
               "dec_upscales_in_fc": 2},
    "dny1024": {**_DNY, "output_size": 1024, "enc_scaling": 100, "fs_original_depth": 9,
                "dec_upscales_in_fc": 2},
}
"""Preset name (Faceswap's, with `_` for `-`) -> the options it changes from the defaults."""

# The CLIP fakers: one flattened CLIP feature vector, one fc model, split sub-pixel decoders.
_CLIPFAKER = {"enable_gblock": False, "split_fc": False, "split_decoders": True,
              "enc_architecture": "clipv_farl-b-16-64", "bottleneck_type": "flatten",
              "fc_upsampler": "subpixel", "dec_slope_mode": "cap_min", "dec_filter_slope": 0.5,
              "dec_gaussian": False}
PRESETS.update({
    "clipfaker128": {**_CLIPFAKER, "enc_scaling": 29},
    "clipfaker256": {**_CLIPFAKER, "output_size": 256, "enc_scaling": 58,
                     "dec_max_filters": 1024},
    "clipfaker448": {**_CLIPFAKER, "output_size": 448, "enc_scaling": 100,
                     "fc_min_filters": 384, "fc_max_filters": 384, "fc_dimensions": 7,
                     "fc_upsample_filters": 1024, "dec_max_filters": 1024},
    "stojo": {"output_size": 256, "enc_architecture": "efficientnet_b4", "enc_scaling": 60,
              "bottleneck_size": 512, "fc_min_filters": 1280, "fc_max_filters": 1280,
              "fc_dimensions": 8, "fc_upsample_filters": 1280,
              "dec_upscale_method": "resize_images", "dec_min_filters": 160,
              "dec_max_filters": 640, "dec_filter_slope": -0.33, "dec_output_kernel": 3,
              "dec_skip_last_residual": False},
    "sym384": {"output_size": 384, "enable_gblock": False, "split_fc": False,
               "split_decoders": True, "enc_architecture": "efficientnet_v2_s",
               "enc_scaling": 100, "bottleneck_type": "max_pooling", "bottleneck_size": 1280,
               "fc_min_filters": 1536, "fc_max_filters": 1536, "fc_dimensions": 3,
               "fc_upsampler": "subpixel", "fc_upsamples": 0, "fc_upsample_filters": 1280,
               "dec_upscale_method": "upscale_dny", "dec_upscales_in_fc": 2,
               "dec_min_filters": 24, "dec_max_filters": 1536, "dec_slope_mode": "cap_max",
               "dec_filter_slope": 0.5, "dec_output_kernel": 3},
})
PRETRAINED_PRESETS = ("clipfaker128", "clipfaker256", "clipfaker448", "stojo", "sym384")
"""Their `freeze_layers` is `("keras_encoder",)`: the experiment files set it."""


def preset_config(name: str, **overrides: Any) -> PhazeAConfig:
    """Phaze-A options of Faceswap's preset `name` (e.g. "dfl_h128" or "dfl-h128"), with any
    `overrides` applied on top."""
    key = name.replace("-", "_")
    if key not in PRESETS:
        raise ConfigError(f"Phaze-A preset {name!r} does not exist: choose one of "
                          f"{', '.join(PRESETS)}")
    return dataclasses.replace(PhazeAConfig(), **{**PRESETS[key], **overrides})
