"""Faceswap's DLight model with `details: fast` (decoder B `decoder_b_fast`: plain fast upscales,
no residual blocks or BatchNorm; more parameters but less compute).

    python -m fsjax.train --config experiments/dlight_fast.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import DlightConfig, ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dlight", dlight=DlightConfig(details="fast")),
        train=TrainConfig(model_dir=pathlib.Path("models/dlight_fast")),
    )
