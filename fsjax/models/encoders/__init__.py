"""The pretrained image networks Phaze-A can use as its encoder (`enc_architecture`).

Each family module (`resnet.py`, `efficientnet.py`, ...) builds its networks as functions called
inside a Flax `nn.compact` method, so every layer becomes a child of the caller with the name
Keras gives it: Faceswap nests the Keras-Applications model inside its `encoder` sub-model and
its saved files list that model's layers under `encoder`, so fsjax's `params["encoder"]` holds
them by the same names and import/export stay name maps.

`ENCODERS` records, for every architecture, what Faceswap's Phaze-A knows about it: the Keras
name, the default input size and the smallest allowed, the input range the network expects and
whether ImageNet weights force the default size (models.md §2.11).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
    """One `enc_architecture` choice.

    `keras_name`: the Keras-Applications function (or CLIP model) name; `family`: the fsjax module
    in this package that builds it; `scaling`: the input range, (0, 1) unchanged, (0, 255) or
    (-1, 1); `enforce_for_weights`: ImageNet weights need the default size (NASNet)."""

    keras_name: str
    family: str
    default_size: int
    scaling: tuple[int, int] = (0, 1)
    min_size: int = 32
    enforce_for_weights: bool = False
    color_order: str = "rgb"


def _family(prefix: str, family: str, names: dict[str, tuple[str, int]],
            **kwargs: Any) -> dict[str, EncoderInfo]:
    return {f"{prefix}{arch}": EncoderInfo(keras, family, size, **kwargs)
            for arch, (keras, size) in names.items()}


ENCODERS: dict[str, EncoderInfo] = {
    **_family("clipv_", "clip", {
        "farl-b-16-16": ("FaRL-B-16-16", 224), "farl-b-16-64": ("FaRL-B-16-64", 224),
        "vit-b-16": ("ViT-B-16", 224), "vit-b-32": ("ViT-B-32", 224),
        "vit-l-14": ("ViT-L-14", 224), "vit-l-14-336px": ("ViT-L-14-336px", 336)}),
    **_family("convnext_", "convnext", {
        "tiny": ("ConvNeXtTiny", 224), "small": ("ConvNeXtSmall", 224),
        "base": ("ConvNeXtBase", 224), "large": ("ConvNeXtLarge", 224),
        "extra_large": ("ConvNeXtXLarge", 224)}, scaling=(0, 255)),
    **_family("densenet", "densenet", {
        "121": ("DenseNet121", 224), "169": ("DenseNet169", 224),
        "201": ("DenseNet201", 224)}),
    **_family("efficientnet_", "efficientnet", {
        "b0": ("EfficientNetB0", 224), "b1": ("EfficientNetB1", 240),
        "b2": ("EfficientNetB2", 260), "b3": ("EfficientNetB3", 300),
        "b4": ("EfficientNetB4", 380), "b5": ("EfficientNetB5", 456),
        "b6": ("EfficientNetB6", 528), "b7": ("EfficientNetB7", 600)}, scaling=(0, 255)),
    **_family("efficientnet_v2_", "efficientnet_v2", {
        "b0": ("EfficientNetV2B0", 224), "b1": ("EfficientNetV2B1", 240),
        "b2": ("EfficientNetV2B2", 260), "b3": ("EfficientNetV2B3", 300),
        "s": ("EfficientNetV2S", 384), "m": ("EfficientNetV2M", 480),
        "l": ("EfficientNetV2L", 480)}, scaling=(-1, 1)),
    "inception_resnet_v2": EncoderInfo("InceptionResNetV2", "inception_resnet_v2", 299,
                                       (-1, 1), min_size=75),
    "inception_v3": EncoderInfo("InceptionV3", "inception_v3", 299, (-1, 1), min_size=75),
    "mobilenet": EncoderInfo("MobileNet", "mobilenet", 224, (-1, 1)),
    "mobilenet_v2": EncoderInfo("MobileNetV2", "mobilenet_v2", 224, (-1, 1)),
    "mobilenet_v3_large": EncoderInfo("MobileNetV3Large", "mobilenet_v3", 224, (-1, 1)),
    "mobilenet_v3_small": EncoderInfo("MobileNetV3Small", "mobilenet_v3", 224, (-1, 1)),
    "nasnet_large": EncoderInfo("NASNetLarge", "nasnet", 331, (-1, 1), enforce_for_weights=True),
    "nasnet_mobile": EncoderInfo("NASNetMobile", "nasnet", 224, (-1, 1),
                                 enforce_for_weights=True),
    **_family("resnet", "resnet", {
        "50": ("ResNet50", 224), "50_v2": ("ResNet50V2", 224), "101": ("ResNet101", 224),
        "101_v2": ("ResNet101V2", 224), "152": ("ResNet152", 224),
        "152_v2": ("ResNet152V2", 224)}, scaling=(-1, 1)),
    "vgg16": EncoderInfo("VGG16", "vgg", 224, (0, 255), color_order="bgr"),
    "vgg19": EncoderInfo("VGG19", "vgg", 224, (0, 255), color_order="bgr"),
    "xception": EncoderInfo("Xception", "xception", 299, (-1, 1), min_size=71),
}
"""Every pretrained `enc_architecture` of Faceswap's Phaze-A (`fs_original` is Phaze-A's own)."""


def family(arch: str) -> Any:
    """The module that builds `arch` (imported on first use: most runs need none of them)."""
    return importlib.import_module(f"{__name__}.{ENCODERS[arch].family}")


def input_size(arch: str, enc_scaling: int, load_weights: bool) -> int:
    """Phaze-A's input size: the default size scaled by `enc_scaling` %, rounded down to 16, at
    least the network's minimum; the default size itself where ImageNet weights require it and
    `enc_scaling` is not 100 (as in Faceswap: at 100 the rounding still applies)."""
    info = ENCODERS[arch]
    if load_weights and info.enforce_for_weights and enc_scaling != 100:
        return info.default_size
    return int(max(info.min_size, ((info.default_size * enc_scaling / 100) // 16) * 16))
