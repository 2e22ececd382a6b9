"""Faceswap's Lightweight model (64 px, for low-memory GPUs).

    python -m fsjax.train --config experiments/lightweight.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="lightweight"),
        train=TrainConfig(model_dir=pathlib.Path("models/lightweight")),
    )
