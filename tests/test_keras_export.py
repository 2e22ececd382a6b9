"""`python -m fsjax.tools.export_keras`: a model imported from Faceswap 3 goes back out as a
`.keras` that is Faceswap's own file again, weight for weight; one imported from Faceswap 2 goes
out as the Keras 3 file Faceswap 3's updater would make. Without the imported graph, as for a model
fsjax created, export writes the graph it traces, and the file is again Faceswap's (its config
differing only in Keras's object numbering). Real Keras loads each export and runs it to
Faceswap's recorded outputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import h5py
import jax
import numpy as np
import pytest
from test_keras_graph import without_object_ids

from fsjax.checkpoint.manager import Checkpoints
from fsjax.interop import keras_export, keras_import
from fsjax.interop.keras_file import read
from fsjax.tools import export_keras, import_keras

# variant: (plugin, Faceswap's folder). The Faceswap 2 model goes out through Faceswap 3's
# config upgrade (fsjax.interop.keras_upgrade), so only real Keras can check it.
MODELS = {"dfl_sae_df_tiny": ("dfl_sae", "models/dfl_sae_df_tiny"),
          "phaze_a_tiny_gblock": ("phaze_a", "models/phaze_a_tiny_gblock"),
          "dfl_sae_liae_fs2": ("dfl_sae", "legacy_h5/dfl_sae_liae")}
KERAS3 = ["dfl_sae_df_tiny", "phaze_a_tiny_gblock"]
# The same imports without the imported graph: export writes the graph it traces from the
# model fsjax builds, as for a model fsjax created (keras_graph).
TRACED = {f"{variant}_traced": variant for variant in KERAS3}
TOLERANCE = 1e-5

# Run by real Keras in a subprocess (Keras stays out of the test process). Faceswap's custom layers
# that the graphs use are written here from their documented maths (data.md §6.1, models.md §1);
# custom_objects resolves them by their `registered_name`.
KERAS_SCRIPT = '''
import sys

import keras
import numpy as np
from keras import ops


class PixelShuffler(keras.layers.Layer):
    """(h, w, r*r*c) -> (h*r, w*r, c): the channels hold an r x r tile, row-major."""

    def __init__(self, size=(2, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(size)

    def call(self, x):
        _, height, width, channels = x.shape
        ry, rx = self.size
        x = ops.reshape(x, (-1, height, width, ry, rx, channels // (ry * rx)))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height * ry, width * rx, channels // (ry * rx)))


class AdaInstanceNormalization(keras.layers.Layer):
    """[x, beta, gamma]: x normalised per sample and channel over H, W (eps added to the standard
    deviation), then scaled by gamma and shifted by beta."""

    def __init__(self, epsilon=1e-3, axis=-1, momentum=0.99, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        x, beta, gamma = inputs
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True))
        return (x - mean) / (std + self.epsilon) * gamma + beta

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class InstanceNormalization(keras.layers.Layer):
    """Faceswap's plugins use axis=None: statistics over H, W and C per sample, eps added to
    the standard deviation, scalar gamma then beta."""

    def __init__(self, axis=None, epsilon=1e-3, center=True, scale=True, **kwargs):
        for key in [k for k in kwargs if k.endswith(("_initializer", "_regularizer",
                                                     "_constraint"))]:
            kwargs.pop(key)
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(1,), name="gamma", initializer="ones")
        self.beta = self.add_weight(shape=(1,), name="beta", initializer="zeros")

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True))
        return (x - mean) / (std + self.epsilon) * self.gamma + self.beta


class Swish(keras.layers.Layer):
    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, x):
        return ops.silu(x * self.beta)


def no_random(shape, *args, dtype=None, **kwargs):
    """Loading overwrites every variable; Keras's random initialisers would compile an XLA
    program per weight shape, most of the load time on CPU."""
    return np.zeros(shape, dtype or "float32")


for name in ("uniform", "normal", "truncated_normal"):
    setattr(keras.src.backend.random, name, no_random)

custom = {"PixelShuffler": PixelShuffler, "AdaInstanceNormalization": AdaInstanceNormalization,
          "InstanceNormalization": InstanceNormalization, "Swish": Swish}
args = sys.argv[1:]
for model_path, inputs_path, out_path in zip(args[::3], args[1::3], args[2::3]):
    model = keras.saving.load_model(model_path, custom_objects=custom, compile=False,
                                    safe_mode=True)
    data = np.load(inputs_path)
    outputs = model.predict([data["input_a"], data["input_b"]], verbose=0)
    np.savez(out_path, *[np.asarray(o) for o in outputs])
'''


@pytest.fixture(scope="module")
def exported(faceswap_dir, tmp_path_factory):
    """Each fixture model imported into fsjax and exported: {variant: (Faceswap's folder, the
    fsjax folder, the exported file)}."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for variant, (plugin, folder) in MODELS.items():
        source = faceswap_dir / folder
        assert import_keras.main([str(source), "--out", str(root / variant)]) == 0
        file = root / "x" / variant / f"{plugin}.keras"
        assert export_keras.main([str(root / variant), "--out", str(file)]) == 0
        out[variant] = (source, root / variant, file)
    for variant, imported in TRACED.items():
        plugin = MODELS[imported][0]
        shutil.copytree(root / imported, root / variant,
                        ignore=shutil.ignore_patterns(f"{plugin}_keras_config.json"))
        file = root / "x" / variant / f"{plugin}.keras"
        assert export_keras.main([str(root / variant), "--out", str(file)]) == 0
        out[variant] = (out[imported][0], root / variant, file)
    return out


def _plugin(variant):
    return MODELS[TRACED.get(variant, variant)][0]


def _h5(path):
    """{h5 path: (attributes, array or None)} of a `.keras`'s model.weights.h5, root included."""
    with zipfile.ZipFile(path) as archive:
        blob = archive.read("model.weights.h5")
    out = {}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        out["/"] = (dict(h5.attrs), None)
        h5.visititems(lambda name, node: out.__setitem__(name, (
            dict(node.attrs), node[()] if isinstance(node, h5py.Dataset) else None)))
    return out


def _saved(folder, plugin):
    checkpoints = Checkpoints(folder, plugin, writable=False)
    try:
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    return saved


@pytest.mark.parametrize("variant", KERAS3 + list(TRACED))
def test_export_gives_back_faceswaps_file_bit_for_bit(exported, variant, capsys):
    plugin = _plugin(variant)
    source, fsjax_dir, file = exported[variant]
    original = source / f"{plugin}.keras"
    ours, theirs = _h5(file), _h5(original)
    assert sorted(ours) == sorted(theirs)  # every group, layers without weights included
    for key, (attrs, array) in theirs.items():
        assert ours[key][0] == attrs, key  # the `name` attribute of every vars group
        if array is not None:
            got = ours[key][1]
            assert got.dtype == array.dtype and got.shape == array.shape, key
            assert got.tobytes() == array.tobytes(), key
    with zipfile.ZipFile(file) as mine, zipfile.ZipFile(original) as faceswaps:
        assert mine.namelist() == faceswaps.namelist()
        if variant in TRACED:  # the traced graph is Faceswap's but for object numbering
            assert mine.read("config.json") == json.dumps(
                without_object_ids(json.loads(faceswaps.read("config.json")))).encode()
        else:
            assert mine.read("config.json") == faceswaps.read("config.json")
        assert set(json.loads(mine.read("metadata.json"))) == {"keras_version", "date_saved"}
    state = json.loads((file.parent / f"{plugin}_state.json").read_text())
    fs_state = json.loads((source / f"{plugin}_state.json").read_text())
    assert state["iterations"] == fs_state["iterations"]
    assert state["sessions"] == fs_state["sessions"]
    assert state["mixed_precision_layers"] == fs_state["mixed_precision_layers"]
    assert state["config"]["mixed_precision"] is False


def _layers(graph):
    for layer in graph["config"]["layers"]:
        if layer["class_name"] in ("Functional", "Sequential"):
            yield from _layers(layer)
        else:
            yield layer


@pytest.mark.parametrize("variant", KERAS3)
def test_the_precision_switchable_layers_are_those_faceswap_records(exported, variant):
    """Faceswap builds a new model once under mixed_float16 to list the layers that switch;
    fsjax finds the same list in the graph it traces: all but the inputs and the float32
    sigmoid of each output."""
    source, fsjax_dir, _ = exported[f"{variant}_traced"]
    graph = keras_export._traced_graph(fsjax_dir)
    _, names = keras_export.with_precision(graph, mixed=False)
    recorded = json.loads((source / f"{_plugin(variant)}_state.json").read_text())
    assert names == recorded["mixed_precision_layers"]


def test_a_float16_model_exports_as_faceswaps_mixed_precision(exported, tmp_path):
    source, fsjax_dir, _ = exported["dfl_sae_df_tiny_traced"]
    folder = tmp_path / "f16"
    shutil.copytree(fsjax_dir, folder)
    state_path = folder / "dfl_sae_state.json"
    state = json.loads(state_path.read_text())
    state["config"].update(mixed_precision=True, dtype="float16")
    state_path.write_text(json.dumps(state))
    file = tmp_path / "x" / "dfl_sae.keras"
    assert export_keras.main([str(folder), "--out", str(file)]) == 0
    with zipfile.ZipFile(file) as archive:
        graph = json.loads(archive.read("config.json"))
    dtypes = {}
    for layer in _layers(graph):
        dtype = layer["config"].get("dtype")
        dtypes[layer["config"]["name"]] = dtype if isinstance(dtype, str) else (
            dtype["config"]["name"])
    recorded = json.loads((source / "dfl_sae_state.json").read_text())["mixed_precision_layers"]
    assert {k for k, v in dtypes.items() if v == "mixed_float16"} == set(recorded)
    assert {k: v for k, v in dtypes.items() if k not in recorded} == {
        "face_in_a": "float32", "face_in_b": "float32", "input_layer": "float32",
        "input_layer_1": "float32", "input_layer_2": "float32",
        "face_out_128_a_0": "float32", "face_out_128_b_0": "float32"}
    written = json.loads((file.parent / "dfl_sae_state.json").read_text())
    assert written["config"]["mixed_precision"] is True
    assert written["mixed_precision_layers"] == recorded
    # fsjax reads it back as the float16 policy
    assert keras_import.load(file.parent)[0].config.model.dtype == "float16"


@pytest.mark.parametrize("variant", list(MODELS) + list(TRACED))
def test_fsjax_to_keras_to_fsjax_is_bit_exact(exported, variant):
    source, fsjax_dir, file = exported[variant]
    _, variables = keras_import.load(file.parent)
    saved = _saved(fsjax_dir, _plugin(variant))
    expected = {"params": saved["params"], **saved["model_state"]}
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, variables, expected)))
    with zipfile.ZipFile(file) as archive:  # a Keras 3 file, whatever the source was
        assert json.loads(archive.read("metadata.json"))["keras_version"].startswith("3.")


def test_real_keras_loads_the_export_and_gives_faceswaps_outputs(exported, faceswap_dir,
                                                                 tmp_path):
    script = tmp_path / "run_keras.py"
    script.write_text(KERAS_SCRIPT)
    args = []
    for variant, (source, _, file) in exported.items():
        args += [str(file), str(source / "forward.npz"), str(tmp_path / f"{variant}.npz")]
    env = dict(os.environ, KERAS_BACKEND="jax", KERAS_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    keras = subprocess.Popen([sys.executable, str(script), *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ours = {}  # fsjax's outputs while Keras works
        for variant, (source, _, file) in exported.items():
            model, variables = keras_import.load(file.parent)
            forward = np.load(source / "forward.npz")
            # one compiled program: far quicker on CPU than applying op by op
            ours[variant] = jax.jit(model.apply)(variables, forward["input_a"],
                                                forward["input_b"])
        log, _ = keras.communicate(timeout=300)
    finally:
        keras.kill()
    assert keras.returncode == 0, log[-3000:]
    for variant, (source, _, _) in exported.items():
        forward = np.load(source / "forward.npz")
        got = np.load(tmp_path / f"{variant}.npz")
        assert len(got.files) == len(ours[variant]) == len(
            [k for k in forward.files if k.startswith("output_")])
        for i, fsjax_out in enumerate(ours[variant]):
            keras_out = got[f"arr_{i}"]
            np.testing.assert_allclose(keras_out, fsjax_out, rtol=0, atol=TOLERANCE,
                                       err_msg=f"{variant} output {i}: Keras vs fsjax")
            np.testing.assert_allclose(keras_out, forward[f"output_{i}"], rtol=0, atol=TOLERANCE,
                                       err_msg=f"{variant} output {i}: Keras vs Faceswap")


def test_a_stored_graph_that_is_not_an_imports_is_refused(exported, tmp_path, capsys):
    _, fsjax_dir, _ = exported["dfl_sae_df_tiny"]
    folder = tmp_path / "model"
    shutil.copytree(fsjax_dir, folder)
    (folder / "dfl_sae_keras_config.json").write_text(json.dumps({"format": "savedmodel",
                                                                  "config": {}}))
    out = tmp_path / "faceswap" / "dfl_sae.keras"
    assert export_keras.main([str(folder), "--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert "dfl_sae_keras_config.json: not the Keras graph an import writes" in message
    assert message.count("\n") == 1 and not out.parent.exists()


def test_weights_that_do_not_fit_the_graph_are_named(faceswap_dir):
    keras = read(faceswap_dir / MODELS["phaze_a_tiny_gblock"][1] / "phaze_a.keras")
    weights = {sub: {layer: dict(zip(("kernel", "bias"), arrays, strict=True))
                     for layer, arrays in layers.items()}
               for sub, layers in keras.weights.items()}
    assert len(keras_export.plan(keras.file_config, weights)) == len(_h5_groups(keras.path))
    weights["encoder"]["dense"]["kernel"] = np.zeros((2048, 64), np.float32)
    with pytest.raises(keras_export.ExportError, match=r"encoder/dense/kernel has shape "
                                                       r"\(2048, 64\); the Keras layer needs "
                                                       r"\(2048, 128\)"):
        keras_export.plan(keras.file_config, weights)
    del weights["encoder"]["dense"]
    with pytest.raises(keras_export.ExportError, match=r"encoder/dense \(Dense\) has 2 "
                                                       "variables in Keras; the checkpoint holds "
                                                       "none"):
        keras_export.plan(keras.file_config, weights)
    weights["encoder"]["dense"] = {"kernel": np.zeros((2048, 128), np.float32),
                                   "bias": np.zeros(128, np.float32)}
    weights["fc_a"]["extra"] = {"kernel": np.zeros(1, np.float32)}
    with pytest.raises(keras_export.ExportError, match="weight fc_a/extra/kernel has no layer"):
        keras_export.plan(keras.file_config, weights)


def _h5_groups(path):
    """The `vars` groups of a `.keras` file."""
    return [key for key in _h5(path) if key == "vars" or key.endswith("/vars")]
