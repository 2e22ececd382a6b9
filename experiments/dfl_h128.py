"""Faceswap's DFL-H128 model (128 px).

    python -m fsjax.train --config experiments/dfl_h128.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dfl_h128"),
        train=TrainConfig(model_dir=pathlib.Path("models/dfl_h128")),
    )
