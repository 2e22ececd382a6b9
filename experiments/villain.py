"""Faceswap's Villain model (128 px, heavy).

    python -m fsjax.train --config experiments/villain.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="villain"),
        train=TrainConfig(model_dir=pathlib.Path("models/villain")),
    )
