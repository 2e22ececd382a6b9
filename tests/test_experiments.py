"""Every experiment file loads, validates and builds its model."""

import pathlib

import pytest

from fsjax.config import ExperimentConfig, load_experiment
from fsjax.models import get_model_module
from fsjax.train import parse_cli
from fsjax.training.summary import count, param_tree

EXPERIMENTS = sorted((pathlib.Path(__file__).resolve().parents[1] / "experiments").glob("*.py"))
EXPECTED_PARAMS = {"original.py": 82_062_470, "original_lowmem.py": 60_565_126,
                   "lightweight.py": 51_066_374, "iae.py": 117_816_003,
                   "dfl_h128.py": 107_716_102, "dfl_h128_lowmem.py": 48_244_102,
                   "dfaker.py": 113_330_822, "dfaker_256.py": 258_046_598,
                   "dfl_sae.py": 130_008_718, "dfl_sae_liae.py": 121_746_593,
                   "villain.py": 155_115_014, "villain_lowmem.py": 118_660_614,
                   "realface.py": 238_241_676, "unbalanced.py": 207_046_186,
                   "unbalanced_lowmem.py": 107_962_506,
                   "dlight.py": 143_614_006, "dlight_fast.py": 163_706_006,
                   "dlight_lowmem.py": 76_188_694,
                   # Phaze-A: defaults and presets (the first four equal Faceswap's manifest)
                   "phaze_a.py": 123_766_211, "phaze_a_original.py": 82_062_470,
                   "phaze_a_dfaker.py": 113_330_822, "phaze_a_dny256.py": 29_885_750,
                   "phaze_a_lightweight.py": 51_066_374, "phaze_a_iae.py": 117_816_003,
                   "phaze_a_dfl_h128.py": 107_716_102, "phaze_a_dfl_sae_df.py": 129_755_834,
                   "phaze_a_dfl_sae_liae.py": 121_620_151,
                   "phaze_a_dfl_saehd_df.py": 52_897_926,
                   "phaze_a_dfl_saehd_liae.py": 87_777_027, "phaze_a_dny512.py": 39_324_982,
                   "phaze_a_dny1024.py": 53_483_830,
                   # Pretrained encoders: Keras' EfficientNetB4 (17,673,823) + Dense(87808 -> 512)
                   # make stojo's 62,632,031-weight encoder; CLIP FaRL-B-16-64 for clipfaker.
                   "phaze_a_stojo.py": 217_495_042, "phaze_a_sym384.py": 215_556_822,
                   "phaze_a_clipfaker128.py": 157_003_654,
                   "phaze_a_clipfaker256.py": 251_424_646,
                   "phaze_a_clipfaker448.py": 285_805_830,
                   "phaze_a_tiny.py": 4_605_523}  # fsjax's own small Phaze-A


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_builds(path):
    config = load_experiment(path)
    assert isinstance(config, ExperimentConfig)
    spec = get_model_module(config.model.name).build(config)
    assert count(param_tree(spec.module, spec.input_size)) == EXPECTED_PARAMS[path.name]


def test_faceswap_flags_and_nested_overrides_reach_the_config(tmp_path):
    config = parse_cli([
        "--config", str(EXPERIMENTS[0]), "--faces-a", str(tmp_path), "--faces-b", str(tmp_path),
        "--model-dir", str(tmp_path / "m"), "--batch-size", "8", "--iterations", "12",
        "--save-interval", "3", "--snapshot-interval", "0", "--no-flip", "--no-warp",
        "--no-augment-color", "--no-logs", "--write-image", "--config.loss.eye-multiplier", "2",
    ])
    assert config.data.faces_a == tmp_path and config.train.model_dir == tmp_path / "m"
    assert (config.train.batch_size, config.target_iterations) == (8, 12)
    assert (config.train.save_interval, config.train.snapshot_interval) == (3, 0)
    assert config.augment.no_flip and config.augment.no_warp and config.augment.no_augment_color
    assert config.train.no_logs and config.train.write_image and config.loss.eye_multiplier == 2.0
    assert load_experiment(EXPERIMENTS[0]).target_iterations == 300  # the demo default


def test_mask_type_none_with_mask_losses_is_a_config_error():
    from fsjax.config import ConfigError, LossConfig

    with pytest.raises(ConfigError, match="mask_type='none' cannot be used"):
        LossConfig(mask_type="none")
    with pytest.raises(ConfigError, match="mask_type='none' cannot be used"):
        LossConfig(mask_type="none", penalized_mask_loss=False, learn_mask=True)
    assert LossConfig(mask_type="none", penalized_mask_loss=False).functions == {
        "ssim": 1.0, "mse": 1.0}
