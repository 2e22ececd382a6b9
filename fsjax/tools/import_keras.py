"""Load a Faceswap model (`<name>.keras` from Faceswap 3, `<name>.h5` from Faceswap 2) into fsjax.

`load(path)` returns `(model, variables)`: `model.apply(variables, face_a, face_b)` gives the
outputs in Faceswap's order (side A's, then side B's). The plugin and its options come from the
Faceswap state file beside the model; every weight is matched by sub-model and layer name and
checked for shape, and anything unmatched or left over is an error naming it. The file itself is
only ever read as data (`fsjax.interop.keras_file`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from fsjax.config import ConfigError, ExperimentConfig, ModelConfig
from fsjax.interop.keras_file import KerasFileError, KerasModel, read
from fsjax.models import MODELS, get_model_module

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


def experiment_from_state(state: dict[str, Any], plugin: str, source: pathlib.Path,
                          ) -> ExperimentConfig:
    """The fsjax experiment a Faceswap state file describes (the options that shape the model).

    Values outside the ranges Faceswap's settings page offers are kept: Faceswap trained the model
    with them, so the model needs them."""
    options = state.get("config", {})
    if not isinstance(options, dict):
        raise KerasFileError(f"{source}: the state file's config is not a mapping")
    plugin_config = getattr(ModelConfig(), plugin, None)
    model = dict(name=plugin, icnr_init=options.get("icnr_init", False),
                 conv_aware_init=options.get("conv_aware_init", False),
                 reflect_padding=options.get("reflect_padding", False),
                 lowmem=options.get("lowmem", False))
    if dataclasses.is_dataclass(plugin_config):
        model[plugin] = _options(type(plugin_config), options)
    base = ExperimentConfig()
    loss = dataclasses.replace(base.loss, learn_mask=bool(options.get("learn_mask", False)))
    return dataclasses.replace(base, model=ModelConfig(**model), loss=loss)


def _options(cls: type, options: dict[str, Any]) -> Any:
    values = {f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options}
    try:
        return cls(**values)
    except ConfigError:  # outside the settings page's ranges: build it as Faceswap did
        config = object.__new__(cls)
        for field in dataclasses.fields(cls):
            object.__setattr__(config, field.name, values.get(field.name, field.default))
        return config


def load(path: pathlib.Path) -> tuple[FaceswapModel, dict[str, Any]]:
    """`(model, variables)` for a Faceswap `.keras` / `.h5` file or a folder holding one."""
    file = find_model_file(pathlib.Path(path))
    plugin = file.stem
    if plugin not in MODELS:
        raise KerasFileError(f"{file}: '{plugin}' is not a Faceswap model plugin "
                             f"({', '.join(MODELS)})")
    state_path = file.with_name(f"{plugin}_state.json")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KerasFileError(f"{state_path}: Faceswap's state file is needed to know the "
                             f"model's options ({err})") from None
    keras = read(file)
    config = experiment_from_state(state, plugin, state_path)
    spec = get_model_module(plugin).build(config)
    size = spec.input_size
    faces = [jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)] * 2
    abstract = jax.eval_shape(spec.module.init, jax.random.key(0), *faces)
    return FaceswapModel(config, spec), map_weights(keras, abstract)


def map_weights(keras: KerasModel, abstract: dict[str, Any]) -> dict[str, Any]:
    """Places every Keras weight at the fsjax variable of the same sub-model and layer name.

    Within a layer, Keras stores the kernel before the bias; fsjax names them, so they pair by
    rank. Layers with two weights of one rank (norms) are refused until their Keras order is
    mapped. Every fsjax variable must be filled and every Keras weight used."""
    if any(k != "params" for k in abstract):
        raise KerasFileError(f"{keras.path}: importing models with {sorted(abstract)} "
                             "(BatchNorm statistics) is not supported yet")
    target = abstract["params"]
    params: dict[str, Any] = {}
    for sub, layers in keras.weights.items():
        if sub not in target:
            raise KerasFileError(f"{keras.path}: sub-model {sub!r} has no place in fsjax's "
                                 f"model (it has {', '.join(sorted(target))})")
        for layer, arrays in _flat_layers(layers):
            slots = target[sub].get(layer)
            if slots is None:
                raise KerasFileError(f"{keras.path}: weight {sub}/{layer} has no place in "
                                     "fsjax's model")
            names = sorted(slots, key=lambda n: (-len(slots[n].shape), n))
            ranks = [len(slots[n].shape) for n in names]
            if len(set(ranks)) != len(ranks):  # e.g. a norm's gamma and beta: order unknown
                raise KerasFileError(f"{keras.path}: {sub}/{layer} has several weights of one "
                                     f"rank ({', '.join(names)}); importing it is not "
                                     "supported yet")
            if len(names) != len(arrays):
                raise KerasFileError(f"{keras.path}: {sub}/{layer} holds {len(arrays)} arrays; "
                                     f"fsjax's layer has {names}")
            out = params.setdefault(sub, {}).setdefault(layer, {})
            for name, array in zip(names, arrays, strict=True):
                if tuple(array.shape) != tuple(slots[name].shape):
                    raise KerasFileError(
                        f"{keras.path}: {sub}/{layer}/{name} has shape {tuple(array.shape)}; "
                        f"fsjax's model needs {tuple(slots[name].shape)}")
                out[name] = jnp.asarray(array, slots[name].dtype)
    missing = [f"{sub}/{layer}" for sub, layers in target.items() for layer in layers
               if layer not in params.get(sub, {})]
    if missing:
        raise KerasFileError(f"{keras.path}: no weights for {', '.join(missing[:10])}"
                             f"{' ...' if len(missing) > 10 else ''}")
    return {"params": params}


def _flat_layers(layers: dict[str, Any]):
    """Layers of a sub-model; weights of models nested inside it are named by their layer."""
    for name, value in layers.items():
        if isinstance(value, dict):
            yield from _flat_layers(value)
        else:
            yield name, value
