"""Faceswap's DFaker model (64 px in, 128 px out).

    python -m fsjax.train --config experiments/dfaker.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dfaker"),
        train=TrainConfig(model_dir=pathlib.Path("models/dfaker")),
    )
