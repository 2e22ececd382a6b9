"""Faceswap's IAE model re-created in Phaze-A: per-side and shared fc models, one decoder (64 px)
(Faceswap's `iae` Phaze-A preset).

    python -m fsjax.train --config experiments/phaze_a_iae.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.models.phaze_a_presets import preset_config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=preset_config("iae")),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_iae")),
    )
