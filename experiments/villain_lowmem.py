"""Faceswap's Villain model, `lowmem` variant.

    python -m fsjax.train --config experiments/villain_lowmem.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="villain", lowmem=True),
        train=TrainConfig(model_dir=pathlib.Path("models/villain_lowmem")),
    )
