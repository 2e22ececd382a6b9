"""Phaze-A's Sym384 preset: Keras' EfficientNetV2-S as the encoder (384 px in), max-pool
bottleneck, DNY upscales, 384 px out (Faceswap's `sym384` Phaze-A preset).

The encoder starts from its pretrained weights, read from efficientnetv2-s_notop.h5
in ~/.keras/models (or `--config.model.phaze-a.enc-weights-path`; fsjax never downloads), and
`--freeze-weights` freezes that network (`keras_encoder`), as the preset does in Faceswap.

    python -m fsjax.train --config experiments/phaze_a_sym384.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.models.phaze_a_presets import preset_config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=preset_config("sym384")),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_sym384"),
                          freeze_layers=("keras_encoder",)),
    )
