"""A tiny Phaze-A (64 px in and out, about 4.6 M parameters) for smoke and reliability runs on a
CPU, e.g. `scripts/crash_test.py`. It is a real Faceswap model that Faceswap can build with these
options, but far too small to swap faces well.

    python -m fsjax.train --config experiments/phaze_a_tiny.py --batch-size 4
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.config.plugins import PhazeAConfig


def get_config() -> ExperimentConfig:
    phaze_a = PhazeAConfig(
        output_size=64, enable_gblock=False, bottleneck_size=128, fc_min_filters=128,
        fc_max_filters=128, fc_dimensions=2, fc_upsample_filters=128, dec_min_filters=16,
        dec_max_filters=256, fs_original_depth=3, fs_original_min_filters=16,
        fs_original_max_filters=256,
    )
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=phaze_a),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_tiny"), batch_size=4),
    )
