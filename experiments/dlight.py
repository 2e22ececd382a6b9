"""Faceswap's DLight model (128 px in, 256 px out; features best, details good).

    python -m fsjax.train --config experiments/dlight.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dlight"),
        train=TrainConfig(model_dir=pathlib.Path("models/dlight")),
    )
