"""Faceswap's Unbalanced model (128 px; decoder B larger than A, so B->A swaps may suffer).

    python -m fsjax.train --config experiments/unbalanced.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="unbalanced"),
        train=TrainConfig(model_dir=pathlib.Path("models/unbalanced")),
    )
