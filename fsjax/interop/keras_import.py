"""Reading a Faceswap model (`<name>.keras` from Faceswap 3, `<name>.h5` from Faceswap 2) into
fsjax.

`load(path)` returns `(model, variables)`: `model.apply(variables, face_a, face_b)` gives the
outputs in Faceswap's order (side A's, then side B's). The plugin and its options come from the
Faceswap state file beside the model; every weight is matched by sub-model and layer name and
checked for shape, and anything unmatched or left over is an error naming it. The file itself is
only ever read as data (`fsjax.interop.keras_file`).

`import_model(source, out)` writes a new fsjax model folder from it that resumes training, with
Faceswap's optimizer state where it maps onto optax's.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.checkpoint import state_file
from fsjax.checkpoint.manager import Checkpoints
from fsjax.config import ConfigError, ExperimentConfig
from fsjax.config.faceswap_state import experiment_from_state, read_state
from fsjax.interop import optimizer_state
from fsjax.interop.keras_file import (
    KerasFileError,
    KerasModel,
    SubLayers,
    Weight,
    read,
    read_optimizer,
)
from fsjax.interop.optimizer_state import OptimizerImportError, keras_order
from fsjax.models import MODELS, get_model_module, nesting
from fsjax.optim.loss_scale import DynamicLossScale, LossScaleState
from fsjax.optim.optimizers import make_optimizer

MODEL_SUFFIXES = (".keras", ".h5")


@dataclasses.dataclass(frozen=True)
class FaceswapModel:
    """An fsjax model that answers in Faceswap's output order."""

    config: ExperimentConfig
    spec: Any  # the plugin's ModelSpec

    def apply(self, variables: dict[str, Any], face_a: jax.Array, face_b: jax.Array,
              **kwargs: Any) -> list[jax.Array]:
        outputs = self.spec.module.apply(variables, face_a, face_b, **kwargs)
        return [x for side in ("a", "b") for x in faceswap_order(outputs[side])]


def faceswap_order(side: dict[str, Any]) -> list[jax.Array]:
    """One side's outputs as Faceswap lists them: the faces (smallest scale first), then the
    mask."""
    return [*side["faces"], *([side["mask"]] if "mask" in side else [])]


def find_model_file(path: pathlib.Path) -> pathlib.Path:
    """The model file itself, or the one `.keras` / `.h5` in a model folder."""
    path = pathlib.Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise KerasFileError(f"{path}: no such file or folder")
    found = sorted(p for p in path.iterdir() if p.suffix in MODEL_SUFFIXES
                   and p.stem in MODELS and p.is_file())
    if len(found) != 1:
        raise KerasFileError(f"{path}: expected one Faceswap model file (<plugin>.keras or "
                             f"<plugin>.h5), found {[p.name for p in found] or 'none'}")
    return found[0]


def load(path: pathlib.Path) -> tuple[FaceswapModel, dict[str, Any]]:
    """`(model, variables)` for a Faceswap `.keras` / `.h5` file or a folder holding one."""
    model, variables, _, _ = _load(pathlib.Path(path))
    return model, variables


def _load(path: pathlib.Path) -> tuple[FaceswapModel, dict[str, Any], KerasModel, dict]:
    file = find_model_file(path)
    plugin = file.stem
    if plugin not in MODELS:
        raise KerasFileError(f"{file}: '{plugin}' is not a Faceswap model plugin "
                             f"({', '.join(MODELS)})")
    state_path = file.with_name(f"{plugin}_state.json")
    if not state_path.is_file():
        raise KerasFileError(f"{state_path}: Faceswap's state file is needed to know the "
                             "model's options; copy it from the model's folder")
    try:
        state = read_state(state_path)
        config = experiment_from_state(state, plugin, state_path)
        spec = get_model_module(plugin).build(config)
    except ConfigError as err:
        raise KerasFileError(f"{err} (Faceswap's state file beside the model gives its "
                             "options)") from None
    size = spec.input_size
    faces = [jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)] * 2
    abstract = jax.eval_shape(spec.module.init, jax.random.key(0), *faces)
    keras = read(file)
    try:
        variables = map_weights(keras, abstract)
    finally:
        keras.close()
    return FaceswapModel(config, spec), variables, keras, state


def map_weights(keras: KerasModel, abstract: dict[str, Any]) -> dict[str, Any]:
    """Places every Keras weight at the fsjax variable of the same sub-model and layer name.

    A model nested in a sub-model (Phaze-A's pretrained network) is matched layer by layer
    (`nesting`). Within a layer, Keras stores the variables in creation order (kernel, bias;
    gamma, beta, moving_mean, moving_variance); fsjax names them with Keras's names, so
    `KERAS_ORDER` pairs them. BatchNorm statistics go to fsjax's `batch_stats`. Every fsjax
    variable must be filled, every Keras weight used, and every shape and dtype must agree: all
    of it is checked before a single value is read, so what is read is what the model needs and
    no more."""
    slots: dict[tuple[str, str], dict[str, tuple[str, Any]]] = {}
    paths: dict[str, nesting.Paths] = {}
    for collection, tree in abstract.items():
        flat, paths[collection] = nesting.flatten(tree)
        for sub, layers in flat.items():
            for layer, leaves in layers.items():
                for name, leaf in leaves.items():
                    slots.setdefault((sub, layer), {})[name] = (collection, leaf)
    subs = sorted({sub for sub, _ in slots})
    plan: list[tuple[str, str, str, tuple[str, ...], Any, Any]] = []
    filled = set()
    for sub, layers in keras.weights.items():
        if sub not in subs:
            raise KerasFileError(f"{keras.path}: sub-model {sub!r} has no place in fsjax's "
                                 f"model (it has {', '.join(subs)})")
        for layer, arrays in _flat_layers(layers):
            held = slots.get((sub, layer))
            if held is None:
                raise KerasFileError(f"{keras.path}: weight {sub}/{layer} has no place in "
                                     "fsjax's model")
            plan.extend((collection, sub, layer, keys, leaf, array) for collection, keys, leaf,
                        array in pair_layer(keras.path, f"{sub}/{layer}", held, arrays))
            filled.add((sub, layer))
    missing = [f"{sub}/{layer}" for sub, layer in slots if (sub, layer) not in filled]
    if missing:
        raise KerasFileError(f"{keras.path}: no weights for {', '.join(missing[:10])}"
                             f"{' ...' if len(missing) > 10 else ''}")
    out: dict[str, Any] = {collection: {} for collection in abstract}
    for collection, sub, layer, keys, leaf, array in plan:
        node = out[collection].setdefault(sub, {}).setdefault(layer, {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        # Cast on the host: a device cast would compile once per weight shape.
        node[keys[-1]] = jnp.asarray(np.asarray(array, leaf.dtype))
    return {c: nesting.unflatten(tree, paths[c]) for c, tree in out.items()}


def _groups(held: Any) -> dict[str, Any]:
    """A layer's variables (fsjax's `{name: (collection, leaf)}` or Keras' list of weights) by
    inner layer: `""` for a plain layer, `query` / `key` / ... for an attention layer's."""
    if isinstance(held, SubLayers):
        return dict(held)
    if isinstance(held, dict) and any(isinstance(v[1], dict) for v in held.values()):
        return {group: {name: (collection, leaf) for name, leaf in tree.items()}
                for group, (collection, tree) in held.items()}
    return {"": held}


def pair_layer(source: Any, label: str, held: dict[str, tuple[str, Any]],
               arrays: Any) -> list[tuple[str, tuple[str, ...], Any, Any]]:
    """One layer's file weights (a list in Keras order, or `SubLayers`) paired with fsjax's
    variables (`{name: (collection, leaf)}`, an attention layer's by inner layer): `(collection,
    keys within the layer, leaf, weight)`, every count, shape and dtype checked first."""
    ours, theirs = _groups(held), _groups(arrays)
    if set(ours) != set(theirs):
        raise KerasFileError(f"{source}: {label} holds {sorted(theirs)}; fsjax's layer has "
                             f"{sorted(ours)}")
    return [pair for group, inner in ours.items()
            for pair in _pair_group(source, label, group, inner, theirs[group])]


def _pair_group(source: Any, label: str, group: str, held: dict[str, tuple[str, Any]],
                arrays: list[Any]) -> list[tuple]:
    label += f"/{group}" if group else ""
    try:
        names = keras_order(held)
    except OptimizerImportError as err:
        raise KerasFileError(f"{source}: {label}: {err}") from None
    if len(names) != len(arrays):
        raise KerasFileError(f"{source}: {label} holds {len(arrays)} arrays; fsjax's layer "
                             f"has {names}")
    plan = []
    for name, array in zip(names, arrays, strict=True):
        collection, leaf = held[name]
        where = f"{source}: {label}/{name}"
        stored = f" (dataset {array.where})" if isinstance(array, Weight) else ""
        if tuple(array.shape) != tuple(leaf.shape):
            raise KerasFileError(f"{where} has shape {tuple(array.shape)}; fsjax's model needs "
                                 f"{tuple(leaf.shape)}{stored}")
        kind = "i" if np.dtype(leaf.dtype).kind in "iu" else "f"  # a Normalization count
        if np.dtype(array.dtype).kind not in (kind + "u" if kind == "i" else kind) and (
                np.dtype(array.dtype).name != "bfloat16" or kind == "i"):
            raise KerasFileError(f"{where} has dtype {array.dtype}; fsjax's model needs "
                                 f"{np.dtype(leaf.dtype).name}{stored}")
        plan.append((collection, (group, name) if group else (name,), leaf, array))
    return plan


def _flat_layers(layers: dict[str, Any]):
    """Layers of a sub-model; weights of models nested inside it are named by their layer."""
    for name, value in layers.items():
        if isinstance(value, dict) and not isinstance(value, SubLayers):
            yield from _flat_layers(value)
        else:
            yield name, value


@dataclasses.dataclass(frozen=True)
class _Saved:
    """The checkpoint of an imported model (`fsjax.checkpoint.manager.SavedState`)."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    loss_scale: Any


def _quiet(line: str) -> None:
    del line


def import_model(source: pathlib.Path, out: pathlib.Path,
                 say: Callable[[str], None] = _quiet) -> pathlib.Path:
    """Writes a new fsjax model folder `out` from a Faceswap model file or folder: the weights as
    the checkpoint of Faceswap's iteration count, the optimizer where it maps onto optax's, the
    state file (sessions, iterations, options) and the TensorBoard logs. Resume it with
    `python -m fsjax.train --config OUT`. `say` is told what became of the optimizer state and
    what was imported."""
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        raise KerasFileError(f"{out}: the new model folder must be empty or not exist")
    model, variables, keras, fs_state = _load(pathlib.Path(source))
    config = dataclasses.replace(model.config, train=dataclasses.replace(
        model.config.train, model_dir=out))
    name = model.spec.name
    params = variables["params"]
    opt_state = make_optimizer(config.optimizer).init(params)
    imported = _import_optimizer(keras, config, params, say)
    if imported is not None:
        opt_state = optimizer_state.with_adam(opt_state, imported)
    iterations = int(fs_state.get("iterations", 0))
    state = _Saved(step=jnp.asarray(iterations, jnp.int32), params=params, opt_state=opt_state,
                   model_state={k: v for k, v in variables.items() if k != "params"},
                   loss_scale=_loss_scale(config, imported, say))
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(out, name)
    try:
        checkpoints.save(state, {}, with_optimizer=imported is not None)
    finally:
        checkpoints.close()
    state_file.write_state(state_file.state_path(out, name), _fsjax_state(fs_state, config))
    state_file.write_text_atomic(out / "config.json", state_file.experiment_json(config))
    state_file.write_text_atomic(out / f"{name}_keras_config.json",
                                 json.dumps({"format": keras.format, "config": keras.file_config,
                                            "keras_version": keras.keras_version}))
    logs = keras.path.parent / f"{name}_logs"
    if logs.is_dir():
        shutil.copytree(logs, out / f"{name}_logs")
    count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    say(f"Imported '{name}' from {keras.path}: {count:,} parameters, iteration {iterations}, "
        f"{len(fs_state.get('sessions', {}))} session(s) -> {out}")
    return out


def _import_optimizer(keras: KerasModel, config: ExperimentConfig, params: dict[str, Any],
                     say: Callable[[str], None] = _quiet) -> optimizer_state.AdamMoments | None:
    """Faceswap's optimizer state, or None (`say` is told why) when it is absent or does not
    map."""
    if not keras.has_optimizer:
        say(f"{keras.path} holds no optimizer state (Faceswap's save_optimizer): the "
            "optimizer starts afresh, as in Faceswap")
        return None
    try:
        if config.optimizer.optimizer not in ("adam", "adamw") or config.optimizer.ada_amsgrad:
            raise optimizer_state.OptimizerImportError(
                f"the model's optimizer is {config.optimizer.optimizer}"
                f"{' with AMSGrad' if config.optimizer.ada_amsgrad else ''}; only Adam's and "
                "AdamW's state maps onto fsjax's")
        flat, paths = nesting.flatten(params)
        if keras.format == "keras3":
            moments = optimizer_state.from_torch(read_optimizer(keras.path), keras, flat)
        else:
            moments = optimizer_state.from_keras2(keras, flat)
        moments.mu, moments.nu = (nesting.unflatten(moments.mu, paths),
                                  nesting.unflatten(moments.nu, paths))
    except optimizer_state.OptimizerImportError as err:
        say(f"Faceswap's optimizer state in {keras.path} was not imported ({err}): the "
            "optimizer starts afresh, as Faceswap does for a model saved without one")
        return None
    say(f"Imported Faceswap's Adam state at optimizer step {moments.step}")
    return moments


def _loss_scale(config: ExperimentConfig, imported: optimizer_state.AdamMoments | None,
                say: Callable[[str], None]) -> LossScaleState:
    """The policy Faceswap's `mixed_precision` maps to (told to the user), and the loss scale
    to continue: Faceswap 3's saved GradScaler where there is one, else Keras's start."""
    state = DynamicLossScale.configured(config).init()
    if config.model.dtype != "float16":
        return state
    say("Faceswap trained this model with mixed precision: it continues in fsjax's float16 "
        "policy (model.dtype) with dynamic loss scaling; --config.model.dtype bfloat16 or "
        "float32 may be chosen on resume")
    if imported is not None and imported.loss_scale is not None:
        scale, good = imported.loss_scale
        say(f"Imported Faceswap's loss scale {scale:g} ({good} finite steps since it grew)")
        return LossScaleState(jnp.asarray(scale, jnp.float32), jnp.asarray(good, jnp.int32))
    return state


def _fsjax_state(fs_state: dict[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    """The state file of the new folder: Faceswap's history, fsjax's record of the options."""
    lowest = fs_state.get("lowest_avg_loss")
    if isinstance(lowest, dict):  # Faceswap 2 kept one per side; Faceswap 3 sums them
        lowest = float(sum(v for v in lowest.values() if isinstance(v, (int, float))))
    sessions = fs_state.get("sessions", {})
    return {
        "name": config.model.name,
        "sessions": {str(k): v for k, v in sessions.items() if isinstance(v, dict)},
        "lowest_avg_loss": lowest if isinstance(lowest, (int, float)) else None,
        "iterations": int(fs_state.get("iterations", 0)),
        "mixed_precision_layers": list(fs_state.get("mixed_precision_layers", [])),
        "lr_finder": float(fs_state.get("lr_finder", -1.0)),
        "config": state_file.faceswap_options(config),
    }
