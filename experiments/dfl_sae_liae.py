"""Faceswap's DFL-SAE model, liae architecture, 128 px.

    python -m fsjax.train --config experiments/dfl_sae_liae.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import DflSaeConfig, ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dfl_sae", dfl_sae=DflSaeConfig(architecture="liae")),
        train=TrainConfig(model_dir=pathlib.Path("models/dfl_sae_liae")),
    )
