"""Phaze-A's CLIP faker, 448 px out: CLIP's FaRL-B-16-64 vision transformer as the
encoder (224 px in, Faceswap's `clipfaker448` Phaze-A preset).

The encoder starts from its pretrained weights, read from Faceswap's CLIP file
CLIPv_FaRL-B-16-64_v1.h5 (in Faceswap's `.fs_cache` folder: point
`--config.model.phaze-a.enc-weights-path` at it, or copy it to ~/.keras/models; fsjax never
downloads), and `--freeze-weights` freezes that network (`keras_encoder`), as the preset
does in Faceswap.

    python -m fsjax.train --config \
        experiments/phaze_a_clipfaker448.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.models.phaze_a_presets import preset_config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=preset_config("clipfaker448")),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_clipfaker448"),
                          freeze_layers=("keras_encoder",)),
    )
