r"""DeepFaceLab's SAEHD (df architecture) re-created in Phaze-A (128 px)
(Faceswap's `dfl-saehd-df` Phaze-A preset).

    python -m fsjax.train --config experiments/phaze_a_dfl_saehd_df.py \
        --faces-a A_DIR --faces-b B_DIR
"""

import pathlib

from fsjax.config import ExperimentConfig, ModelConfig, TrainConfig
from fsjax.models.phaze_a_presets import preset_config


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        model=ModelConfig(name="phaze_a", phaze_a=preset_config("dfl_saehd_df")),
        train=TrainConfig(model_dir=pathlib.Path("models/phaze_a_dfl_saehd_df")),
    )
