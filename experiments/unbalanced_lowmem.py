"""Faceswap's Unbalanced model, `lowmem` variant (fixed smaller widths, no residuals in B).

    python -m fsjax.train --config experiments/unbalanced_lowmem.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="unbalanced", lowmem=True),
        train=TrainConfig(model_dir=pathlib.Path("models/unbalanced_lowmem")),
    )
