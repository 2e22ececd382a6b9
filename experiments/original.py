"""Faceswap's Original model with Faceswap's default settings.

    python -m fsjax.train --config experiments/original.py                      # demo faces
    python -m fsjax.train --config experiments/original.py \
        --faces-a ~/faces/a --faces-b ~/faces/b --model-dir ~/models/original    # your faces
"""

from fsjax.config import ExperimentConfig, ModelConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(model=ModelConfig(name="original"))
