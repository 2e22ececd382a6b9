"""Faceswap's IAE (Improved AutoEncoder): shared decoder, identity in the intermediates.

    python -m fsjax.train --config experiments/iae.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="iae"),
        train=TrainConfig(model_dir=pathlib.Path("models/iae")),
    )
