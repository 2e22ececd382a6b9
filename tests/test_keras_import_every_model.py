"""The importer on every model Faceswap builds: files laid out as Faceswap 3 (`.keras`) and
Faceswap 2 (`.h5`) save them, with Faceswap's own sub-model, layer and variable names, shapes and
Keras 3 weight paths taken from `models_manifest.json` (Faceswap's build of 24 variants; the
EfficientNet one needs Keras's pretrained encoder, which fsjax does not build).

Variants alternate between the two formats. Each weight holds one distinct value (an HDF5 fill
value, so the files stay kilobytes however large the model), and the test checks that every fsjax
variable received exactly the value of the Keras weight of the same name. The options come from
the variant's settings through the state file, as an import reads them.
"""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import jax
import numpy as np
import pytest
from test_keras_graph import VARIANTS

from fsjax.interop import keras_file
from fsjax.interop.keras_import import load


@pytest.fixture(scope="module")
def manifest(faceswap_dir):
    return json.loads((faceswap_dir / "models_manifest.json").read_text())["variants"]


def _weights(entry):
    """(sub-model, layer, variable, shape, Keras 3 path, class) of every weight, model order."""
    return [(sub["name"], layer["name"], w["path"].rsplit("/", 1)[1], tuple(w["shape"]),
             w["h5_path"], layer["class_name"])
            for sub in entry["sub_models"] for layer in sub["layers"] for w in layer["weights"]]


def _config(entry, plugin):
    """A functional config with the manifest's sub-models and layers (what the reader checks)."""
    layers = [{"class_name": "Functional", "module": "keras.src.models.functional",
               "config": {"name": sub["name"], "trainable": True, "layers": [
                   {"class_name": layer["class_name"], "module": "keras.layers",
                    "config": {"name": layer["name"], "trainable": True}}
                   for layer in sub["layers"]]}}
              for sub in entry["sub_models"]]
    return {"class_name": "Functional", "config": {"name": plugin, "layers": layers}}


def _state(entry, plugin):
    options = {key.rsplit(".", 1)[1]: value for key, value in entry["applied_config"].items()}
    return {"name": plugin, "sessions": {}, "iterations": 7, "lowest_avg_loss": None,
            "config": options}


def write_keras3(path, entry, plugin):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as root:
        for i, (sub, layer, _, shape, h5_path, _) in enumerate(_weights(entry)):
            group, _, index = h5_path.rpartition("/vars/")
            root.create_dataset(h5_path, shape=shape, dtype=np.float16, fillvalue=i + 1)
            root[f"{group}/vars"].attrs["name"] = layer
            root.require_group(f"{group.rsplit('/layers/', 1)[0]}/vars").attrs["name"] = sub
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.14.1"}))
        archive.writestr("config.json", json.dumps(_config(entry, plugin)))
        archive.writestr("model.weights.h5", buffer.getvalue())


def write_keras2(path, entry, plugin):
    with h5py.File(path, "w") as root:
        root.attrs["keras_version"] = "2.10.0"
        root.attrs["backend"] = "tensorflow"
        root.attrs["model_config"] = json.dumps(_config(entry, plugin))
        weights = root.create_group("model_weights")
        weights.attrs["layer_names"] = ["face_in_a", "face_in_b"] + [
            s["name"] for s in entry["sub_models"]]
        names: dict[str, list[str]] = {}
        for i, (sub, layer, var, shape, _, _) in enumerate(_weights(entry)):
            name = f"{layer}/{var}:0"
            weights.create_dataset(f"{sub}/{name}", shape=shape, dtype=np.float16,
                                   fillvalue=i + 1)
            names.setdefault(sub, []).append(name)
        for sub, listed in names.items():
            # Keras 2 lists a sub-model's trainable weights before its non-trainable ones.
            listed.sort(key=lambda n: n.split("/")[-1].startswith("moving_"))
            weights[sub].attrs["weight_names"] = listed


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_faceswap_model_imports_weight_for_weight(variant, manifest, tmp_path,
                                                        monkeypatch):
    # The files below declare each weight with its index as the fill value and store none of
    # it (writing 23 full-size models would take minutes); the reader refuses such weights
    # (test_keras_file), so here that one check is lifted.
    monkeypatch.setattr(keras_file, "_SMALL", 2**62)
    entry = manifest[variant]
    plugin = entry["plugin"]
    expected = {(sub, layer, var): i + 1
                for i, (sub, layer, var, *_) in enumerate(_weights(entry))}
    # Each format's reader is also checked on Faceswap's real files; here the formats alternate
    # over the variants so that each family meets both and the suite stays short.
    formats = (("keras", write_keras3), ("h5", write_keras2))
    for fmt, writer in formats[VARIANTS.index(variant) % 2:][:1]:
        folder = tmp_path / fmt
        folder.mkdir()
        writer(folder / f"{plugin}.{fmt}", entry, plugin)
        (folder / f"{plugin}_state.json").write_text(json.dumps(_state(entry, plugin)))
        model, variables = load(folder)
        got = {}
        for collection in variables.values():
            for path, leaf in jax.tree_util.tree_leaves_with_path(collection):
                sub, layer, var = (p.key for p in path)
                array = np.asarray(leaf)  # numpy: a jnp reduction compiles per shape
                low, high = float(array.min()), float(array.max())
                assert low == high, f"{fmt}: {sub}/{layer}/{var} mixes weights"
                got[(sub, layer, var)] = int(low)
        assert got == expected, f"{fmt}: {set(got.items()) ^ set(expected.items())}"
        assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables)) == \
            entry["total_params"]
        del variables, model
