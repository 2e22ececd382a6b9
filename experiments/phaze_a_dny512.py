"""Phaze-A's DNY preset: Disney-research style encoder and upscales, 512 px in and out
(Faceswap's `dny512` Phaze-A preset).

    python -m fsjax.train --config experiments/phaze_a_dny512.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.models.phaze_a_presets import preset_config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=preset_config("dny512")),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_dny512")),
    )
