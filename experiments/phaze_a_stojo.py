"""Phaze-A's Stojo preset: Keras' EfficientNet-B4 as the encoder (224 px in), G-Block,
resize-images upscales, 256 px out (Faceswap's `stojo` Phaze-A preset).

The encoder starts from its pretrained weights, read from efficientnetb4_notop.h5
in ~/.keras/models (or `--config.model.phaze-a.enc-weights-path`; fsjax never downloads), and
`--freeze-weights` freezes that network (`keras_encoder`), as the preset does in Faceswap.

    python -m fsjax.train --config experiments/phaze_a_stojo.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.models.phaze_a_presets import preset_config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=preset_config("stojo")),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_stojo"),
                          freeze_layers=("keras_encoder",)),
    )
