"""The Keras class and config of each fsjax layer, as Faceswap 3's Keras saves them.

`module_layer` maps the Flax modules that own variables (Conv2D, Dense, the normalizations, ...)
and the random layers; `fsjax.nn.layers` reports the parameter-free ones itself. Configs list
Keras's keys in Keras's order, so a traced graph reads as the `config.json` Faceswap writes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from fsjax.nn import blocks, conv, initializers, normalization


def _initializer(init: Any) -> dict[str, Any]:
    """The Keras initializer a layer was created with. Loading overwrites every variable, so an
    initializer fsjax does not know is written as Keras's default (GlorotUniform)."""
    known = {id(initializers.he_uniform): ("HeUniform", {"seed": None}),
             id(initializers.he_normal): ("HeNormal", {"seed": None}),
             id(initializers.glorot_uniform): ("GlorotUniform", {"seed": None}),
             id(initializers.residual_second_init): ("VarianceScaling", {
                 "seed": None, "scale": 0.2, "mode": "fan_in", "distribution": "uniform"})}
    faceswap = getattr(init, "faceswap", None)
    if faceswap is not None:  # ICNR / ConvolutionAware (`initializers` tags them)
        class_name, config = faceswap
        if "initializer" in config:
            config = {**config, "initializer": _initializer(config["initializer"])}
        return {"module": "lib.model.initializers", "class_name": class_name, "config": config,
                "registered_name": class_name}
    class_name, config = known.get(id(init), ("GlorotUniform", {"seed": None}))
    return {"module": "keras.initializers", "class_name": class_name, "config": config,
            "registered_name": None}


_ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {},
          "registered_name": None}
_ONES = {**_ZEROS, "class_name": "Ones"}


def _conv_common(m: Any, padding: str = "same") -> dict[str, Any]:
    k, s = m.kernel_size, m.strides
    return {"kernel_size": [k, k] if isinstance(k, int) else list(k), "strides": [s, s],
            "padding": padding, "data_format": "channels_last", "dilation_rate": [1, 1]}


def _regularized(*names: str) -> dict[str, None]:
    """Keras's regularizer and constraint keys, in its order (Faceswap sets none of them)."""
    return ({f"{n}_regularizer": None for n in names} | {"activity_regularizer": None}
            | {f"{n}_constraint": None for n in names})


def module_layer(m: nn.Module) -> tuple[str, dict[str, Any], str, str | None] | None:
    """(class, config, Keras module, registered name) of a Flax layer module; None for others."""
    if isinstance(m, conv.Conv2D):
        cfg = {"filters": m.filters, **_conv_common(m, m.padding.lower()), "groups": 1,
               "activation": "linear", "use_bias": m.use_bias,
               "kernel_initializer": _initializer(m.kernel_init), "bias_initializer": _ZEROS,
               **_regularized("kernel", "bias")}
        return "Conv2D", cfg, "keras.layers", None
    if isinstance(m, conv.DepthwiseConv2D):
        cfg = {"depth_multiplier": m.depth_multiplier, **_conv_common(m, m.padding.lower()),
               "activation": "linear", "use_bias": m.use_bias,
               "depthwise_initializer": _initializer(m.kernel_init),
               "bias_initializer": _ZEROS, **_regularized("depthwise", "bias")}
        return "DepthwiseConv2D", cfg, "keras.layers", None
    if isinstance(m, conv.SeparableConv2D):
        init = _initializer(m.kernel_init)
        cfg = {"depth_multiplier": 1, "filters": m.filters,
               **_conv_common(m, m.padding.lower()), "activation": "linear",
               "use_bias": m.use_bias, "depthwise_initializer": init,
               "pointwise_initializer": init, "bias_initializer": _ZEROS,
               **_regularized("depthwise", "pointwise", "bias")}
        return "SeparableConv2D", cfg, "keras.layers", None
    if isinstance(m, conv.Conv2DTranspose):
        common = _conv_common(m)
        cfg = {"filters": m.filters, **{k: v for k, v in common.items() if k != "dilation_rate"},
               "output_padding": None, "data_format": "channels_last",
               "dilation_rate": [1, 1], "activation": "linear", "use_bias": True,
               "kernel_initializer": _initializer(m.kernel_init), "bias_initializer": _ZEROS,
               **_regularized("kernel", "bias")}
        return "Conv2DTranspose", cfg, "keras.layers", None
    if isinstance(m, nn.Dense):
        cfg = {"units": m.features, "activation": "linear", "use_bias": m.use_bias,
               "kernel_initializer": _initializer(m.kernel_init), "bias_initializer": _ZEROS,
               "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
               "bias_constraint": None, "quantization_config": None}
        return "Dense", cfg, "keras.layers", None
    if isinstance(m, normalization.BatchNormalization):
        cfg = {"axis": -1, "momentum": m.momentum, "epsilon": m.epsilon, "center": m.center,
               "scale": m.scale, "beta_initializer": _ZEROS, "gamma_initializer": _ONES,
               "moving_mean_initializer": _ZEROS, "moving_variance_initializer": _ONES,
               "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
               "gamma_constraint": None, "synchronized": False, "renorm": False,
               "renorm_clipping": None, "renorm_momentum": 0.99}
        return "BatchNormalization", cfg, "keras.layers", None
    if isinstance(m, normalization.InstanceNormalization):
        cfg = {"axis": None, "epsilon": m.epsilon, "center": True, "scale": True,
               "beta_initializer": _ZEROS, "gamma_initializer": _ONES, "beta_regularizer": None,
               "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None}
        return "InstanceNormalization", cfg, "lib.model.normalization", "InstanceNormalization"
    if isinstance(m, normalization.LayerNormalization):
        cfg = {"axis": [-1], "epsilon": m.epsilon, "center": True, "scale": True,
               "rms_scaling": False, "beta_initializer": _ZEROS, "gamma_initializer": _ONES,
               "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
               "gamma_constraint": None}
        return "LayerNormalization", cfg, "keras.layers", None
    if isinstance(m, normalization.GroupNormalization):
        cfg = {"epsilon": m.epsilon, "axis": [-1], "gamma_init": _ONES, "beta_init": _ZEROS,
               "gamma_regularizer": None, "beta_regularizer": None, "group": m.groups}
        return "GroupNormalization", cfg, "lib.model.normalization", "GroupNormalization"
    if isinstance(m, normalization.RMSNormalization):  # built on 4D maps: axis -1 saved as 3
        cfg = {"axis": 3, "epsilon": m.epsilon, "partial": 0.0, "bias": False}
        return "RMSNormalization", cfg, "lib.model.normalization", "RMSNormalization"
    if isinstance(m, blocks.PReLU):
        cfg = {"alpha_initializer": _ZEROS, "alpha_regularizer": None, "alpha_constraint": None,
               "shared_axes": None}
        return "PReLU", cfg, "keras.layers", None
    if isinstance(m, blocks.GaussianNoise):
        return "GaussianNoise", {"stddev": m.stddev, "seed": None}, "keras.layers", None
    if isinstance(m, blocks.Dropout):
        if m.spatial:
            return ("SpatialDropout2D", {"rate": m.rate, "seed": None,
                                         "data_format": "channels_last"}, "keras.layers", None)
        return "Dropout", {"rate": m.rate, "seed": None, "noise_shape": None}, "keras.layers", None
    return None


FACESWAP_LAYERS = {"PixelShuffler": "lib.model.layers", "ReflectionPadding2D": "lib.model.layers",
                    "Swish": "lib.model.layers", "KResizeImages": "lib.model.layers",
                    "AdaInstanceNormalization": "lib.model.normalization",
                    "GroupNormalization": "lib.model.normalization",
                    "RMSNormalization": "lib.model.normalization"}
MERGE_LAYERS = {"Add", "Multiply", "Concatenate", "AdaInstanceNormalization"}
BUILT = {"Conv2D", "Dense", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
          "BatchNormalization", "InstanceNormalization", "PReLU", "Flatten", "Add", "Multiply",
          "Concatenate", "PixelShuffler", "UpSampling2D", "ZeroPadding2D",
          "AdaInstanceNormalization", "LayerNormalization", "GroupNormalization",
          "RMSNormalization", "ReflectionPadding2D", "KResizeImages", "Swish"}
"""Classes whose saved config carries `build_config` (they define `build`)."""
CALL_KWARGS: dict[str, dict[str, Any]] = {
    "Dropout": {"training": False}, "SpatialDropout2D": {"training": False},
    "GaussianNoise": {"training": False}, "BatchNormalization": {"mask": None}}
"""What Keras records of a layer's call besides its inputs (Faceswap's saves carry these)."""
