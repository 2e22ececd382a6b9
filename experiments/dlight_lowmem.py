"""Faceswap's DLight model, small: `features: lowmem` (48-filter encoder, 640-unit bottleneck)
and 128 px output (details stay `good`).

    python -m fsjax.train --config experiments/dlight_lowmem.py --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import DlightConfig, ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="dlight",
                          dlight=DlightConfig(features="lowmem", output_size=128)),
        train=TrainConfig(model_dir=pathlib.Path("models/dlight_lowmem")),
    )
