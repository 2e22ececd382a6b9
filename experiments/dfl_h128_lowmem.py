"""Faceswap's DFL-H128 model, `lowmem` variant (encoder dimension 256).

    python -m fsjax.train --config experiments/dfl_h128_lowmem.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dfl_h128", lowmem=True),
        train=TrainConfig(model_dir=pathlib.Path("models/dfl_h128_lowmem")),
    )
