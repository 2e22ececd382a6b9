"""Faceswap's Phaze-A model with its default options: 64 px in, 128 px out, split fc models,
G-Block, one shared decoder (about 124 M parameters). Presets: experiments/phaze_a_*.py.

    python -m fsjax.train --config experiments/phaze_a.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a"),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a")),
    )
