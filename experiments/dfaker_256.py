"""Faceswap's DFaker model, 256 px output (128 px in).

    python -m fsjax.train --config experiments/dfaker_256.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import DfakerConfig, ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dfaker", dfaker=DfakerConfig(output_size=256)),
        train=TrainConfig(model_dir=pathlib.Path("models/dfaker_256")),
    )
