"""Faceswap's Original model, `lowmem` variant (no 1024 conv, 512-wide bottleneck).

    python -m fsjax.train --config experiments/original_lowmem.py --model-dir models/original_lowmem
"""

import dataclasses

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return dataclasses.replace(
        ExperimentConfig(),
        model=ModelConfig(name="original", lowmem=True),
        train=TrainConfig(model_dir="models/original_lowmem"),
    )
