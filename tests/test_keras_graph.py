"""The Keras graph fsjax writes for a model it built (`fsjax.interop.keras_graph`), against what
Faceswap's own code builds: `models_manifest.json` lists, for 23 variants of every family, each
sub-model's layers in Keras's order with their classes, output shapes and the `.keras` weight
paths; the two small Faceswap 3 models hold the whole `config.json` Faceswap saved."""

from __future__ import annotations

import json
import zipfile

import pytest

from fsjax.config.faceswap_state import experiment_from_folder, experiment_from_state
from fsjax.interop import keras_graph
from fsjax.interop.keras_export import layer_paths
from fsjax.models import get_model_module

VARIANTS = ["original", "original_lowmem", "original_learn_mask", "lightweight", "iae",
            "dfaker_128", "dfaker_256", "dfl_h128", "dfl_h128_lowmem", "dfl_sae_df",
            "dfl_sae_liae", "dfl_sae_df_multiscale", "villain", "villain_lowmem", "realface",
            "unbalanced", "unbalanced_lowmem", "dlight_best_good_256", "dlight_best_fast_256",
            "phaze_a", "phaze_a_preset_original", "phaze_a_preset_dfaker",
            "phaze_a_preset_dny256"]


@pytest.fixture(scope="module")
def manifest(faceswap_dir):
    return json.loads((faceswap_dir / "models_manifest.json").read_text())["variants"]


def _trace(config):
    spec = get_model_module(config.model.name).build(config)
    return keras_graph.trace(spec.module, spec.input_size, spec.graph_name)


def _layers(graph):
    return [(layer.name, layer.class_name, [None, *layer.out_shapes[0][0][1:]])
            for layer in keras_graph.keras_order(graph)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_graph_has_faceswaps_layers_in_keras_order(variant, manifest):
    entry = manifest[variant]
    plugin = entry["plugin"]
    options = {key.rsplit(".", 1)[1]: value for key, value in entry["applied_config"].items()}
    state = {"name": plugin, "sessions": {}, "iterations": 0, "config": options}
    graph = _trace(experiment_from_state(state, plugin, "manifest"))
    assert graph.name == entry["model_name"]
    top = keras_graph.keras_order(graph)
    assert [(layer.name, layer.class_name) for layer in top] == [
        (layer["name"], layer["class_name"]) for layer in entry["top_level_layers"]]
    subs = {layer.name: layer.sub_graph for layer in top if layer.sub_graph is not None}
    for sub in entry["sub_models"]:
        want = [(layer["name"], layer["class_name"], layer["output_shape"])
                for layer in sub["layers"]]
        assert _layers(subs[sub["name"]]) == want, sub["name"]
    # Where export puts each weight in model.weights.h5 is where Keras put Faceswap's.
    config = keras_graph.model_config(graph)
    paths = {(s, name): where for where, s, name, _ in layer_paths(config) if s is not None}
    for sub in entry["sub_models"]:
        for layer in sub["layers"]:
            for i, weight in enumerate(layer["weights"]):
                assert f"{paths[sub['name'], layer['name']]}/vars/{i}" == weight["h5_path"]
    outputs = config["config"]["output_layers"]
    assert outputs == [[o["layer"], o["node_index"] + 1, o["tensor_index"]]
                       for o in entry["outputs"]]


def without_object_ids(tree):
    """Keras numbers the objects a config shares by memory address (`shared_object_id`)."""
    if isinstance(tree, dict):
        return {k: without_object_ids(v) for k, v in tree.items() if k != "shared_object_id"}
    if isinstance(tree, list):
        return [without_object_ids(v) for v in tree]
    return tree


@pytest.mark.parametrize("folder", ["dfl_sae_df_tiny", "phaze_a_tiny_gblock"])
def test_the_graph_is_the_config_faceswap_saved(folder, faceswap_dir):
    source = faceswap_dir / "models" / folder
    config = experiment_from_folder(source)
    keras_file = next(source.glob("*.keras"))
    with zipfile.ZipFile(keras_file) as archive:
        theirs = json.loads(archive.read("config.json"))
    ours = keras_graph.model_config(_trace(config))
    # Keras numbers shared objects by memory address; the rest is equal entry for entry.
    assert json.dumps(ours) == json.dumps(without_object_ids(theirs))
