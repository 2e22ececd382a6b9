"""State files as Faceswap 2 and 3 wrote them: "none" stored as null, older option spellings,
and values fsjax cannot place refused naming the file, the option and the value."""

import json
import pathlib

import h5py
import numpy as np
import pytest

from fsjax.config import ConfigError
from fsjax.config.faceswap_state import GLOBAL_CHOICES, experiment_from_state
from fsjax.config.plugins import PLUGIN_CHOICES
from fsjax.interop import keras_import
from fsjax.interop.keras_file import read
from fsjax.tools import export_keras, import_keras

PHAZE = "models/phaze_a_tiny_gblock"
# Options that must be turned off for a "none" choice to be a valid experiment.
_WITH = {"mask_type": {"penalized_mask_loss": False, "learn_mask": False}}
# Options Faceswap 2 wrote as null when set to "none" (Faceswap 3 writes "none").
NULLABLE = [("global", k) for k, v in GLOBAL_CHOICES.items() if "none" in v] + [
    (plugin, k) for plugin, options in PLUGIN_CHOICES.items() for k, v in options.items()
    if "none" in v]
NOT_NULLABLE = [("global", k) for k, v in GLOBAL_CHOICES.items() if "none" not in v] + [
    (plugin, k) for plugin, options in PLUGIN_CHOICES.items() for k, v in options.items()
    if "none" not in v]


def _read(plugin, options):
    name = "original" if plugin == "global" else plugin
    return experiment_from_state({"config": options}, name, pathlib.Path(f"{name}_state.json"))


def _value(config, plugin, key):
    if plugin != "global":
        return getattr(getattr(config.model, plugin), key)
    for section in (config.data, config.loss, config.optimizer):
        if hasattr(section, key):
            return getattr(section, key)
    raise AssertionError(key)


def test_every_choice_option_is_covered():
    assert {k for _, k in NULLABLE} >= {"shared_fc", "bottleneck_norm", "dec_norm",
                                         "loss_function_2", "loss_function_3", "loss_function_4",
                                         "mask_type", "gradient_clipping"}
    assert len(NULLABLE) + len(NOT_NULLABLE) == len(GLOBAL_CHOICES) + sum(
        map(len, PLUGIN_CHOICES.values()))


@pytest.mark.parametrize("plugin, key", NULLABLE)
def test_null_and_none_in_any_case_read_as_none(plugin, key):
    base = _WITH.get(key, {})
    read = [_read(plugin, {**base, key: value}) for value in (None, "none", "None", "NONE")]
    assert all(config == read[0] for config in read)
    assert _value(read[0], plugin, key) == "none"


@pytest.mark.parametrize("plugin, key", NOT_NULLABLE)
def test_a_null_where_none_is_not_a_choice_names_file_option_and_value(plugin, key):
    name = "original" if plugin == "global" else plugin
    with pytest.raises(ConfigError, match=rf"{name}_state.json: option '{key}' holds null, "
                                          r"which is not one of its values \("):
        _read(plugin, {key: None})


@pytest.mark.parametrize("plugin, key", NULLABLE + NOT_NULLABLE)
def test_an_unknown_value_names_file_option_and_value(plugin, key):
    with pytest.raises(ConfigError, match=rf"option '{key}' holds \"bogus\", which is not one"):
        _read(plugin, {key: "bogus"})


def test_a_null_numeric_plugin_option_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"phaze_a_state.json: option 'bottleneck_size' holds "
                                          r"null"):
        _read("phaze_a", {"bottleneck_size": None})


def test_faceswaps_older_spellings():
    legacy = _read("global", {"dssim_loss": True, "l2_reg_term": 50.0, "mask_type": None,
                              "penalized_mask_loss": False, "clipnorm": True})
    assert legacy.loss.loss_function == "ssim"
    assert (legacy.loss.loss_function_2, legacy.loss.loss_weight_2) == ("mse", 50.0)
    assert legacy.loss.mask_type == "none" and not legacy.loss.learn_mask
    assert legacy.optimizer.gradient_clipping == "norm"
    assert _read("global", {"dssim_loss": False}).loss.loss_function == "mae"
    masked = _read("global", {"mask_type": "dfl_full", "autoclip": True})
    assert masked.loss.mask_type == "components" and masked.loss.learn_mask
    assert masked.optimizer.gradient_clipping == "autoclip"
    # Keys older files lack take Faceswap's legacy defaults.
    old = _read("global", {})
    assert (old.data.centering, old.data.coverage, old.optimizer.optimizer) == (
        "legacy", 62.5, "adam")


def _faceswap2_folder(source: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """Faceswap's Phaze-A as Faceswap 2 saved models: a Keras 2 `.h5` (model_config attribute,
    model_weights/<sub-model>/<layer>/<var>:0 in Keras order) with Faceswap's own weights, and a
    state file whose "none" options are null."""
    keras = read(source / "phaze_a.keras")
    out.mkdir()
    with h5py.File(out / "phaze_a.h5", "w") as h5:
        h5.attrs["keras_version"] = "2.10.0"
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["model_config"] = json.dumps(keras.file_config)
        group = h5.create_group("model_weights")
        group.attrs["layer_names"] = [s.encode() for s in keras.weights]
        for sub, layers in keras.weights.items():
            names = []
            for layer, arrays in _flat(layers):
                for i, array in enumerate(arrays):
                    names.append(f"{layer}/var_{i}:0")
                    group.create_dataset(f"{sub}/{names[-1]}", data=np.asarray(array))
            group[sub].attrs["weight_names"] = [n.encode() for n in names]
    state = json.loads((source / "phaze_a_state.json").read_text())
    nulled = [k for k, v in state["config"].items() if v == "none"]
    assert {"shared_fc", "bottleneck_norm", "dec_norm"} <= set(nulled)
    state["config"].update(dict.fromkeys(nulled))
    (out / "phaze_a_state.json").write_text(json.dumps(state))
    return out


def _flat(layers, prefix=""):
    for name, value in layers.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{name}/")
        else:
            yield f"{prefix}{name}", value


def test_a_faceswap_2_phaze_a_with_null_options_imports_runs_and_exports_faceswap_3s(
        faceswap_dir, tmp_path):
    source = faceswap_dir / PHAZE
    folder = _faceswap2_folder(source, tmp_path / "faceswap2")
    model, variables = keras_import.load(folder)
    phaze = model.config.model.phaze_a
    assert (phaze.shared_fc, phaze.bottleneck_norm, phaze.dec_norm) == ("none",) * 3
    forward = np.load(source / "forward.npz")
    outputs = model.apply(variables, forward["input_a"], forward["input_b"])
    for i, array in enumerate(outputs):  # Faceswap's own outputs for these weights
        np.testing.assert_allclose(array, forward[f"output_{i}"], rtol=0, atol=1e-5)

    fsjax_dir = tmp_path / "fsjax"
    assert import_keras.main([str(folder), "--out", str(fsjax_dir)]) == 0
    exported = tmp_path / "export" / "phaze_a.keras"
    assert export_keras.main([str(fsjax_dir), "--out", str(exported)]) == 0
    written = json.loads((exported.parent / "phaze_a_state.json").read_text())["config"]
    faceswap3 = json.loads((source / "phaze_a_state.json").read_text())["config"]
    for key, value in faceswap3.items():  # what Faceswap 3 itself wrote for this model
        if value == "none":
            assert written[key] == "none", key
