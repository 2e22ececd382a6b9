"""Faceswap's RealFace model (64 px in, 128 px out; asymmetric decoders, B the larger).

    python -m fsjax.train --config experiments/realface.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="realface"),
        train=TrainConfig(model_dir=pathlib.Path("models/realface")),
    )
