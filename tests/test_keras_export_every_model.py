"""Every model family fsjax builds, exported as a `.keras` and run by real Keras (JAX backend).

Slow (full-size models, 17 minutes on 2 CPU cores): the default run checks the same path on
Faceswap's two small models (`test_keras_export.py`) and every family's graph against Faceswap's
manifest (`test_keras_graph.py`). Run with `pytest -m slow -n 0 -s
tests/test_keras_export_every_model.py` to see each model's errors.

Weights are fresh initialisations, each variable nudged by noise so that none is a plain zero or
one. Keras also runs the file in float64, which gives the exact output of the exported network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
from test_keras_export import KERAS_SCRIPT, TOLERANCE
from test_keras_graph import VARIANTS

from fsjax.config.faceswap_state import experiment_from_state
from fsjax.interop import keras_export, keras_graph
from fsjax.models import get_model_module


def _flat(variables):
    out = {}
    for collection in variables.values():
        for sub, layers in collection.items():
            for layer, vars_ in layers.items():
                out.setdefault(sub, {}).setdefault(layer, {}).update(vars_)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_keras_runs_the_export_of_a_model_fsjax_built(variant, faceswap_dir, tmp_path):
    entry = json.loads((faceswap_dir / "models_manifest.json").read_text())["variants"][variant]
    plugin = entry["plugin"]
    options = {key.rsplit(".", 1)[1]: value for key, value in entry["applied_config"].items()}
    config = experiment_from_state({"name": plugin, "sessions": {}, "iterations": 0,
                                    "config": options}, plugin, "manifest")
    spec = get_model_module(plugin).build(config)
    size = spec.input_size
    # Faceswap's own 64 px training crops (a fixture's recorded inputs), resized for the model.
    crops = np.load(faceswap_dir / "models" / "dfl_sae_df_tiny" / "forward.npz")
    face_a, face_b = (np.asarray(jax.image.resize(crops[f"input_{side}"], (2, size, size, 3),
                                                  "bilinear")) for side in "ab")
    variables = jax.jit(spec.module.init)(jax.random.key(1), face_a, face_b)
    # Zero biases and unit norms would hide a misplaced variable: make every one distinct.
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    variables = jax.tree.unflatten(tree, [v + 0.01 * jax.random.normal(k, v.shape)
                                          for v, k in zip(leaves, keys, strict=True)])
    ours = jax.tree.leaves(jax.jit(spec.module.apply)(variables, face_a, face_b))
    graph = keras_graph.model_config(keras_graph.trace(spec.module, size, spec.graph_name))
    file = tmp_path / f"{plugin}.keras"
    keras_export.write_keras(file, graph, keras_export.plan(graph, _flat(variables)), "3.14.1")
    np.savez(tmp_path / "inputs.npz", input_a=face_a, input_b=face_b)
    # The same file computed in float64 by Keras: the exact output of the exported network.
    exact = tmp_path / "exact" / file.name
    exact.parent.mkdir()
    with zipfile.ZipFile(file) as src, zipfile.ZipFile(exact, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, json.dumps(_float64(json.loads(data))) if name == "config.json"
                         else data)
    (tmp_path / "run_keras.py").write_text(KERAS_SCRIPT)
    (tmp_path / "run_keras64.py").write_text(KERAS_SCRIPT.replace(
        "import keras\n", "import keras\nkeras.config.set_floatx('float64')\n"
        "keras.config.set_dtype_policy('float64')\n", 1).replace(
        'data["input_a"], data["input_b"]',
        'data["input_a"].astype("float64"), data["input_b"].astype("float64")'))
    env = dict(os.environ, KERAS_BACKEND="jax", KERAS_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    for script, model, result, extra in (("run_keras.py", file, "keras.npz", {}),
                                         ("run_keras64.py", exact, "exact.npz",
                                          {"JAX_ENABLE_X64": "1"})):
        run = subprocess.run([sys.executable, str(tmp_path / script), str(model),
                              str(tmp_path / "inputs.npz"), str(tmp_path / result)],
                             env={**env, **extra}, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    got, exact_out = np.load(tmp_path / "keras.npz"), np.load(tmp_path / "exact.npz")
    assert len(got.files) == len(exact_out.files) == len(ours)
    for i, out in enumerate(ours):
        truth = exact_out[f"arr_{i}"]
        assert truth.dtype == np.float64
        keras_error = float(np.abs(got[f"arr_{i}"] - truth).max())
        fsjax_error = float(np.abs(np.asarray(out, np.float64) - truth).max())
        # fsjax runs the exported network within 1e-5, or, where float32 arithmetic alone
        # strays further from the exact result (deep random-weight stacks), about as closely
        # as Keras's own float32 run of the same file. A wrong graph misses by far more.
        print(f"{variant} output {i}: fsjax vs exact {fsjax_error:.1e}, "
              f"Keras float32 vs exact {keras_error:.1e}")
        assert fsjax_error <= max(TOLERANCE, 1.5 * keras_error), (
            f"{variant} output {i}: fsjax {fsjax_error:.2e}, Keras float32 {keras_error:.2e}")


def _float64(tree):
    """A config whose layers take Keras's global dtype policy (float64 here)."""
    if isinstance(tree, list):
        return [_float64(v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    out = {k: _float64(v) for k, v in tree.items() if not isinstance(v, dict) or k != "dtype"}
    if tree.get("class_name") in ("__keras_tensor__", "InputLayer"):
        out["config"]["dtype"] = "float64"
    return out
