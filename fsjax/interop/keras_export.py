"""Writing an fsjax model folder as Faceswap 3's `<plugin>.keras`, to train or convert on in
Faceswap (the command line is `fsjax.tools.export_keras`).

The newest checkpoint's weights go into a `.keras` zip laid out as Keras 3 saves one
(`metadata.json`, `config.json`, `model.weights.h5`), and the folder's `<plugin>_state.json` goes
beside it, since Faceswap reads the iteration count, sessions and options from there.

The graph (`config.json`) of a model imported from Faceswap is the imported file's
(`<plugin>_keras_config.json`), written back unchanged for a Faceswap 3 `.keras`, and for a
Faceswap 2 `.h5` rewritten for Keras 3 as Faceswap 3's own updater does (`keras_upgrade`). For a
model fsjax created, `keras_graph` traces the model built from the folder's options and writes the
graph Faceswap 3 would have saved for them. Either way the graph is only data here: no Keras layer
is built and nothing in it is run.

Inside `model.weights.h5` Keras addresses a layer by position, not by name: each model's layers,
in config order, sit at `layers/<class name in snake_case>` made unique per model (`conv2d`,
`conv2d_1`, ...; a sub-model is `functional`), the variables at `.../vars/<i>` in creation order,
and every `vars` group carries the layer's name as its `name` attribute (the top model's is the
root `vars`). Each fsjax weight is placed by sub-model and layer name. Convolution, Dense and
BatchNorm layers are checked against the variables and shapes their config gives; a weight with no
layer, such a layer left without weights, or a shape that disagrees stops the export, naming it.

No optimizer state is written: Faceswap starts the optimizer afresh when the file holds none, as
it does for its own `save_optimizer = never` saves.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import pathlib
import zipfile
from collections.abc import Iterator
from typing import Any

import h5py
import jax
import numpy as np

from fsjax.checkpoint import folder, state_file
from fsjax.checkpoint.manager import Checkpoints
from fsjax.config import jsonfile
from fsjax.config.faceswap_state import recorded_dtype
from fsjax.interop import keras_graph, keras_upgrade
from fsjax.interop.keras_graph import snake_case
from fsjax.interop.optimizer_state import OptimizerImportError, keras_order
from fsjax.models import nesting

# Faceswap 3's Keras (reference/data.md); named in metadata.json when the import kept none.
KERAS_VERSION = "3.14.1"
_CONVS = {"Conv1D", "Conv2D", "Conv3D"}
_TRANSPOSED = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}


class ExportError(ValueError):
    """The folder cannot be exported; the message says why."""


@dataclasses.dataclass
class Entry:
    """One `vars` group of `model.weights.h5`: where, the layer's name, its arrays in order."""

    path: str
    name: str
    arrays: list[np.ndarray]


def _unique(name: str, used: dict[str, int]) -> str:
    """`name`, then `name_1`, `name_2`, ... within one model, as Keras numbers them."""
    if name not in used:
        used[name] = 0
        return name
    used[name] += 1
    return f"{name}_{used[name]}"


def expected_shapes(class_name: str, config: dict[str, Any],
                    build_config: dict[str, Any] | None) -> list[tuple[int, ...]] | None:
    """The shapes of a Keras layer's variables in creation order, from its config and build input
    shape; None where this does not know the class (or the config lacks the build shape): such a
    layer gets what the checkpoint holds for it, as the import took it from the file."""
    shape = (build_config or {}).get("input_shape")
    if not isinstance(shape, (list, tuple)) or not shape or not all(
            isinstance(d, int) or d is None for d in shape):
        return None
    if class_name == "BatchNormalization":
        axis = config.get("axis", -1)
        size = shape[axis] if isinstance(axis, int) and -len(shape) <= axis < len(shape) else None
        if size is None:
            return None
        return [(size,)] * (bool(config.get("scale", True)) + bool(config.get("center", True)) + 2)
    channels = shape[1] if config.get("data_format") == "channels_first" else shape[-1]
    if channels is None:
        return None
    bias = config.get("use_bias", True)
    kernel = tuple(config.get("kernel_size", ()))
    if class_name == "Dense":
        return [(channels, config["units"])] + [(config["units"],)] * bias
    if class_name in _CONVS:
        filters = config["filters"]
        return [(*kernel, channels // config.get("groups", 1), filters)] + [(filters,)] * bias
    if class_name in _TRANSPOSED:
        return [(*kernel, config["filters"], channels)] + [(config["filters"],)] * bias
    if class_name in _DEPTHWISE | _SEPARABLE:
        inner = channels * config.get("depth_multiplier", 1)
        shapes = [(*kernel, channels, config.get("depth_multiplier", 1))]
        if class_name in _SEPARABLE:
            shapes.append((*(1,) * len(kernel), inner, config["filters"]))
            inner = config["filters"]
        return shapes + [(inner,)] * bias
    return None


def layer_paths(file_config: dict[str, Any]) -> Iterator[tuple[str, str | None, str, dict]]:
    """`(h5 group, sub-model or None, layer name, layer entry)` of every layer of the graph in
    file order, sub-models included (a shared sub-model once, where Keras first meets it)."""
    seen_models: set[str] = set()

    def walk(model: dict[str, Any], path: str, sub: str | None) -> Iterator[tuple]:
        used: dict[str, int] = {}
        sequential = model.get("class_name") == "Sequential"
        for layer in model.get("config", {}).get("layers", []):
            cls, conf = str(layer.get("class_name")), layer.get("config", {})
            name = str(conf.get("name", layer.get("name", "")))
            if str(layer.get("module", "")).startswith("keras.src.ops."):
                continue  # an operation on tensors (Faceswap's input scaling), not a layer
            if sequential and cls == "InputLayer":
                continue  # a Sequential saves no group for its input
            where = f"{path}layers/{_unique(snake_case(cls), used)}"
            if isinstance(conf.get("layers"), list):
                if cls not in ("Functional", "Sequential"):  # Sequential: ConvNeXt's blocks
                    raise ExportError(f"{sub or 'model'}/{name}: a nested {cls} model; Faceswap "
                                      "models nest only functional and sequential ones")
                if name in seen_models:
                    continue
                seen_models.add(name)
                yield where, None, name, layer
                yield from walk(layer, f"{where}/", sub or name)
                continue
            yield where, sub, name, layer

    yield from walk(file_config, "", None)


def plan(file_config: dict[str, Any], variables: dict[str, Any]) -> list[Entry]:
    """Every `vars` group of the file for the graph `file_config` (the `.keras`'s config.json),
    filled from `variables` (`{sub-model: {layer: {variable: array}}}`)."""
    left = {(sub, layer): vars_ for sub, layers in variables.items()
            for layer, vars_ in layers.items()}
    done: set[tuple[str, str]] = set()
    entries = [Entry("", str(file_config.get("config", {}).get("name", "")), [])]
    attention = 0
    for where, sub, name, layer in layer_paths(file_config):
        if isinstance(layer.get("config", {}).get("layers"), list):
            entries.append(Entry(where, name, []))
            continue
        key = (sub or "", name)
        if key in done and left.get(key):
            raise ExportError(f"{sub}: two Keras layers named {name!r}")
        held = left.get(key, {}) if sub else {}
        done.add(key)
        cls = str(layer.get("class_name"))
        if cls == "MultiHeadAttention":
            attention += 1
            entries.extend(_attention(where, f"{sub}/{name}", name, held, attention - 1))
            continue
        entries.append(Entry(where, name, _arrays(f"{sub or 'model'}/{name}", cls, layer, held)))
    extra = sorted(f"{sub}/{layer}/{var}" for (sub, layer), vars_ in left.items()
                   if (sub, layer) not in done for var in vars_)
    if extra:
        raise ExportError(f"weight {extra[0]} has no layer in the model's Keras graph"
                          f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}")
    return entries


_ATTENTION_GROUPS = (("query_dense", "query"), ("key_dense", "key"), ("value_dense", "value"),
                     ("output_dense", "attention_output"))
"""Keras MultiHeadAttention's inner layers: their h5 group and their name."""


def _attention(where: str, label: str, name: str, held: dict[str, Any],
               index: int) -> list[Entry]:
    """The `index`-th MultiHeadAttention as Keras saves it: no weights of its own, one group
    per inner layer (kernel, bias) and its (empty) softmax and dropout layers, which Keras
    names itself (`softmax`, `softmax_1`, ... as in a session where the attention layers are
    the only ones to make them; only the name attribute of an empty group depends on it)."""
    if set(held) != {inner for _, inner in _ATTENTION_GROUPS}:
        raise ExportError(f"{label}: an attention layer needs {[n for _, n in _ATTENTION_GROUPS]}"
                          f", the checkpoint holds {sorted(held)}")
    suffix = f"_{index}" if index else ""
    entries = [Entry(where, name, []), Entry(f"{where}/_softmax", f"softmax{suffix}", []),
               Entry(f"{where}/_dropout_layer", f"dropout{suffix}", [])]
    for group, inner in _ATTENTION_GROUPS:
        entries.append(Entry(f"{where}/{group}", inner, _arrays(
            f"{label}/{inner}", "EinsumDense", {}, held[inner])))
    return entries


def _arrays(where: str, cls: str, layer: dict[str, Any], held: dict[str, Any]) -> list[np.ndarray]:
    """One layer's arrays in Keras's variable order, checked against what its config needs."""
    try:
        names = keras_order(held)
    except OptimizerImportError as err:
        raise ExportError(f"{where}: {err}") from None
    shapes = expected_shapes(cls, layer.get("config", {}), layer.get("build_config"))
    if shapes is not None and len(shapes) != len(names):
        raise ExportError(f"{where} ({cls}) has {len(shapes)} variables in Keras; the checkpoint "
                          f"holds {names or 'none'}")
    out = []
    for i, name in enumerate(names):
        # Faceswap's variables are float32, mixed precision included; a Normalization's sample
        # count stays an integer.
        array = np.asarray(jax.device_get(held[name]))
        array = array.astype(np.int32 if array.dtype.kind in "iu" else np.float32)
        if shapes is not None and tuple(array.shape) != tuple(shapes[i]):
            raise ExportError(f"{where}/{name} has shape {tuple(array.shape)}; the Keras layer "
                              f"needs {tuple(shapes[i])}")
        out.append(array)
    return out


def weights_h5(entries: list[Entry]) -> bytes:
    """`model.weights.h5` as Keras writes it: a `vars` group per layer, named, arrays by index."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for entry in entries:
            group = h5.create_group(f"{entry.path}/vars" if entry.path else "vars")
            group.attrs["name"] = entry.name
            for i, array in enumerate(entry.arrays):
                group[str(i)] = array
    return buffer.getvalue()


def write_keras(path: pathlib.Path, file_config: dict[str, Any], entries: list[Entry],
                keras_version: str) -> None:
    """The `.keras` zip (stored, unmodified members, as Keras writes it), via a temporary file
    renamed into place, so a crash never leaves half a model where Faceswap looks."""
    metadata = {"keras_version": keras_version,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    blob = weights_h5(entries)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w") as archive:
                archive.writestr(zipfile.ZipInfo("metadata.json"), json.dumps(metadata))
                archive.writestr(zipfile.ZipInfo("config.json"), json.dumps(file_config))
                archive.writestr("model.weights.h5", blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _keras_graph(model_dir: pathlib.Path, name: str) -> dict[str, Any]:
    path = model_dir / f"{name}_keras_config.json"
    stored: Any = None
    if path.is_file():
        try:
            stored = jsonfile.parse(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ExportError(f"{path}: unreadable ({err})") from None
    else:
        return {"format": "keras3", "config": _traced_graph(model_dir), "keras_version": None}
    if not isinstance(stored, dict) or stored.get("format") not in ("keras3", "keras2") or (
            not isinstance(stored.get("config"), dict)):
        raise ExportError(f"{path}: not the Keras graph an import writes (format keras3 or "
                          "keras2 and a config); delete it to export the graph of the model "
                          "fsjax builds from the folder's options")
    if stored["format"] == "keras2":  # as Faceswap 3's updater rewrites it (data.md §6.3)
        stored = {**stored, "config": keras_upgrade.upgrade(stored["config"]),
                  "keras_version": None}  # the file is Keras 3's now
    return stored


def _traced_graph(model_dir: pathlib.Path) -> dict[str, Any]:
    """The graph Faceswap 3 would save for the folder's model and options."""
    from fsjax.config import ConfigError  # local: the CLI's import stays light
    from fsjax.config.faceswap_state import experiment_from_folder
    from fsjax.models import get_model_module

    try:
        config = experiment_from_folder(model_dir)
    except ConfigError as err:
        raise ExportError(str(err)) from None
    # The graph is traced in float32: Faceswap saves float32 variables, mixed precision or not.
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dtype="float32"))
    spec = get_model_module(config.model.name).build(config)
    if spec.pretrained is not None:
        raise ExportError(f"{model_dir}: fsjax cannot write the Keras graph of a Phaze-A model "
                          f"it created with a pretrained encoder ({spec.pretrained.arch}); one "
                          "imported from Faceswap exports with the graph it came with")
    try:
        graph = keras_graph.trace(spec.module, spec.input_size, spec.graph_name)
    except keras_graph.GraphError as err:
        raise ExportError(f"{model_dir}: no Keras graph for this model ({err})") from None
    return keras_graph.model_config(graph)


def with_precision(file_config: dict[str, Any], mixed: bool, recorded: Any = None,
                   ) -> tuple[dict[str, Any], list[str]]:
    """The graph with Faceswap's dtype policy on every layer that can switch precision
    (`mixed_float16` for a float16 model, else `float32`) and the names of those layers, as
    Faceswap records them in `mixed_precision_layers`: the state file's list where it holds one,
    else every layer but the inputs and those Faceswap pins to float32: the sigmoid of each
    `Conv2DOutput` and Phaze-A's `AdaInstanceNormalization`. bfloat16 has no Faceswap policy:
    it is written as float32."""
    graph = json.loads(json.dumps(file_config))  # a copy to edit
    names: list[str] = []

    def walk(layers: list[dict[str, Any]]) -> None:
        for layer in layers:
            config = layer.get("config", {})
            if layer.get("class_name") in ("Functional", "Sequential"):
                walk(config.get("layers", []))
                continue
            pinned = layer.get("class_name") == "AdaInstanceNormalization" or (
                layer.get("class_name") == "Activation" and config.get("activation") == "sigmoid")
            if layer.get("class_name") != "InputLayer" and "dtype" in config and not pinned:
                names.append(config["name"])

    walk(graph.get("config", {}).get("layers", []))
    if isinstance(recorded, list) and recorded and all(isinstance(n, str) for n in recorded):
        names = list(recorded)
    switch, policy = set(names), "mixed_float16" if mixed else "float32"

    def apply(layers: list[dict[str, Any]]) -> None:
        for layer in layers:
            config = layer.get("config", {})
            if layer.get("class_name") in ("Functional", "Sequential"):
                apply(config.get("layers", []))
            elif config.get("name") in switch and "dtype" in config:
                dtype = config["dtype"]
                if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
                    dtype["config"]["name"] = policy  # Keras's own entry, shared id and all
                else:
                    config["dtype"] = keras_upgrade.dtype_policy(policy)

    apply(graph.get("config", {}).get("layers", []))
    return graph, names


def _variables(saved: dict[str, Any]) -> dict[str, Any]:
    """params and the model-state collections (BatchNorm statistics) as one tree."""
    out: dict[str, Any] = {}
    trees = [saved["params"], *dict(saved.get("model_state") or {}).values()]
    for tree in trees:
        for sub, layers in nesting.flatten(dict(tree))[0].items():
            for layer, vars_ in dict(layers).items():
                slot = out.setdefault(sub, {}).setdefault(layer, {})
                for var, array in dict(vars_).items():
                    if var in slot:
                        raise ExportError(f"checkpoint holds {sub}/{layer}/{var} twice")
                    slot[var] = array
    return out


def export(model_dir: pathlib.Path, out: pathlib.Path, *,
           force: bool = False) -> tuple[pathlib.Path, int, int]:
    """Writes `out` (`<plugin>.keras`) and its state file from the newest save of `model_dir`;
    returns (path, iteration, number of weights written)."""
    model_dir, out = pathlib.Path(model_dir), pathlib.Path(out)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir}: no such model folder")
    name = folder.model_name(model_dir)
    stored = _keras_graph(model_dir, name)
    if out.suffix != ".keras" or out.stem != name:
        raise ExportError(f"{out}: Faceswap loads the model from <model folder>/{name}.keras; "
                          "name the output that")
    state_out = state_file.state_path(out.parent, name)
    existing = [p for p in (out, state_out) if p.exists()]
    if existing and not force:
        raise ExportError(f"{existing[0]} exists; pass --force to replace it")
    checkpoints = Checkpoints(model_dir, name, writable=False)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise ExportError(f"{model_dir}: no complete checkpoint to export")
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]), step)
    finally:
        checkpoints.close()
    state = state_file.load_state(state_file.state_path(model_dir, name))
    mixed = recorded_dtype(state.get("config", {}), model_dir) == "float16"
    graph, layers = with_precision(stored["config"], mixed, state.get("mixed_precision_layers"))
    entries = plan(graph, _variables(saved))
    state["iterations"] = int(step)  # the weights written are those of this iteration
    state["mixed_precision_layers"] = layers
    if not isinstance(state.get("lowest_avg_loss"), (int, float)):
        state["lowest_avg_loss"] = 0.0  # Faceswap's "none yet"; it compares this with a float
    out.parent.mkdir(parents=True, exist_ok=True)
    write_keras(out, graph, entries, str(stored.get("keras_version") or KERAS_VERSION))
    state_file.write_state(state_out, state)
    return out, int(step), sum(a.size for e in entries for a in e.arrays)
