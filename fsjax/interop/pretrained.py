"""`enc_load_weights`: a new Phaze-A model starts its pretrained network from ImageNet (or CLIP)
weights in a file the user already has. fsjax never downloads.

The file is the one Keras Applications (or Faceswap, for CLIP) keeps: by name
(`efficientnetb0_notop.h5`, ...) in `model.phaze_a.enc_weights_path` when that is a folder, in
`$KERAS_HOME/models`, else `~/.keras/models`; or `enc_weights_path` itself when it names a file.
It is read as data only, through the checks of `fsjax.interop.keras_file` (HDF5 datasets of
weight dtypes and sane shapes stored inside the file, no links): Keras 2's `save_weights` layout
(`layer_names` / `weight_names` attributes, what Keras Applications ships) or Keras 3's
`.weights.h5` (`layers/<name>/vars/<i>`). Layers are matched by name (Faceswap's CLIP files by
position, as Faceswap reads them), each layer's arrays in Keras' creation order, and every shape
is checked before any value is placed.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import h5py
import jax
import numpy as np

from fsjax.config import ConfigError
from fsjax.interop import keras_file
from fsjax.interop.keras_file import KerasFileError
from fsjax.interop.keras_import import pair_layer
from fsjax.interop.optimizer_state import keras_order
from fsjax.models.encoders.backbone import BackboneSpec, weighted_layers


def weights_folders() -> list[pathlib.Path]:
    """Where Keras keeps downloaded weights: `$KERAS_HOME/models`, else `~/.keras/models`."""
    home = os.environ.get("KERAS_HOME")
    return [pathlib.Path(home) / "models" if home else pathlib.Path.home() / ".keras" / "models"]


def find_weights(spec: BackboneSpec, path: str = "") -> pathlib.Path:
    """The weights file for `spec`, or a ConfigError naming the file expected and where fsjax
    looked (and that it does not download)."""
    given = pathlib.Path(path).expanduser() if path else None
    if given is not None and given.is_file():
        return given
    folders = [given] if given is not None else weights_folders()
    for folder in folders:
        candidate = folder / spec.weights_file
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(f) for f in folders)
    kept = ("Faceswap keeps its CLIP files in its .fs_cache folder" if spec.arch.startswith(
        "clipv_") else "Keras and Faceswap keep it in ~/.keras/models after their first download")
    raise ConfigError(
        f"model.phaze_a.enc_load_weights: {spec.arch} needs its pretrained weights file "
        f"{spec.weights_file!r}, which is not in {looked}. fsjax does not download: copy the "
        f"file there ({kept}), point model.phaze_a.enc_weights_path at it, or set "
        "enc_load_weights=False")


def _names(group: Any, attr: str) -> list[str]:
    """A list attribute, which Keras splits into `<attr>0`, `<attr>1`... when it is long."""
    if attr in group.attrs:
        return [keras_file._text(n) for n in group.attrs[attr]]
    out: list[str] = []
    index = 0
    while f"{attr}{index}" in group.attrs:
        out.extend(keras_file._text(n) for n in group.attrs[f"{attr}{index}"])
        index += 1
    return out


def read_weights(path: pathlib.Path, root: Any) -> dict[str, list[keras_file.Weight]]:
    """`{layer name: [weights in Keras order]}` from the open weights file `root` (values are
    read later, from the file)."""
    keras_file._check_links(path, root)
    if "layers" in root:
        return dict(_flat(keras_file._keras3_weights(path, root)))
    group = root["model_weights"] if "model_weights" in root else root
    layer_names = _names(group, "layer_names")
    if not layer_names:
        raise KerasFileError(f"{path}: neither Keras 2 (layer_names) nor Keras 3 (layers/) "
                             "weights")
    out: dict[str, list[keras_file.Weight]] = {}
    for layer in layer_names:
        sub = group.get(layer)
        if not isinstance(sub, h5py.Group):
            continue
        arrays = [keras_file._weight(path, root, f"{sub.name}/{n}", sub.get(n))
                  for n in _names(sub, "weight_names")]
        if arrays:
            out[layer] = arrays
    return out


def _flat(weights: dict[str, Any]):
    for name, value in weights.items():
        if isinstance(value, dict):
            yield from _flat(value)
        else:
            yield name, value


def load(variables: dict[str, Any], spec: BackboneSpec, path: pathlib.Path,
         say: Any = print) -> tuple[dict, int]:
    """`variables` (`{"params": ..., "batch_stats": ...}` of the whole model, placed arrays) with
    the pretrained network's layers replaced by the file's; and the parameter count loaded.

    Keras-Applications files are matched by layer name: every layer of the network must be in the
    file with the same shapes; its other layers (a classification top) are ignored. Faceswap's
    CLIP files are matched by position, as Faceswap loads them (`say` is told what is skipped)."""
    slots: dict[str, dict[str, tuple[str, Any]]] = {}
    for collection, tree in variables.items():
        for layer, leaves in tree.get("encoder", {}).get(spec.model_name, {}).items():
            for name, leaf in leaves.items():
                slots.setdefault(layer, {})[name] = (collection, leaf)
    root = keras_file._open_h5(path, path)
    try:
        file = read_weights(path, root)
        if spec.arch.startswith("clipv_"):
            return _load_by_position(variables, spec, path, file, say)
        return _load(variables, spec, path, slots, file)
    finally:
        root.close()


_ATTENTION = ("query", "key", "value", "attention_output")
"""Keras MultiHeadAttention's sub-layers, in the order it creates their weights."""


def _in_order(layer: dict[str, Any]) -> list[tuple[str, ...]]:
    """A layer's variables in Keras' order: an attention layer's sub-layers (kernel, bias each)
    or `keras_order`; CLIP's tables hold one variable whatever its name."""
    if any(isinstance(v, dict) for v in layer.values()):
        return [(sub, name) for sub in _ATTENTION if sub in layer
                for name in keras_order(layer[sub])]
    if len(layer) == 1:
        return [(next(iter(layer)),)]
    return [(name,) for name in keras_order(layer)]


def _load_by_position(variables: dict[str, Any], spec: BackboneSpec, path: pathlib.Path,
                      file: dict[str, list[keras_file.Weight]], say: Any) -> tuple[dict, int]:
    """Faceswap loads its CLIP files by position (their layer names use dots where the model's
    use underscores) and skips a layer whose shapes differ, as Keras' `skip_mismatch` does: the
    positional table of an input size other than the network's default stays as initialised."""
    params = variables["params"]["encoder"][spec.model_name]
    ours = weighted_layers(spec, spec.size)
    if len(ours) != len(file):
        raise KerasFileError(f"{path}: {len(file)} layers with weights; {spec.model_name} of "
                             f"{spec.arch} has {len(ours)}: is this the file for {spec.arch}?")
    out = {c: dict(t) for c, t in variables.items()}
    encoder = out["params"]["encoder"] = dict(out["params"]["encoder"])
    model = encoder[spec.model_name] = dict(params)
    count, skipped = 0, []
    for layer, arrays in zip(ours, file.values(), strict=True):
        order = _in_order(params[layer])
        leaves = [_get(params[layer], where) for where in order]
        if len(arrays) != len(leaves) or any(tuple(a.shape) != tuple(leaf.shape)
                                             for a, leaf in zip(arrays, leaves, strict=False)):
            skipped.append(layer)
            continue
        new = jax.tree.map(lambda x: x, params[layer])
        for where, leaf, array in zip(order, leaves, arrays, strict=True):
            value = np.asarray(array).astype(leaf.dtype)
            _set(new, where, jax.device_put(value, leaf.sharding))
            count += value.size
        model[layer] = new
    if skipped:
        say(f"warning: {path.name}: the weights of {', '.join(skipped)} do not fit this input "
            "size and stay as initialised, as in Faceswap (Keras' skip_mismatch)")
    return out, count


def _get(tree: dict[str, Any], where: tuple[str, ...]) -> Any:
    for key in where:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], where: tuple[str, ...], value: Any) -> None:
    for key in where[:-1]:
        tree = tree[key]
    tree[where[-1]] = value


def _load(variables: dict[str, Any], spec: BackboneSpec, path: pathlib.Path,
          slots: dict[str, dict[str, tuple[str, Any]]],
          file: dict[str, list[keras_file.Weight]]) -> tuple[dict, int]:
    missing = [layer for layer in slots if layer not in file]
    if missing:
        raise KerasFileError(f"{path}: no weights for layer(s) {', '.join(missing[:8])} of "
                             f"{spec.model_name}: is this the file for {spec.arch}?")
    plan = [(layer, pair) for layer, held in slots.items()
            for pair in pair_layer(path, layer, held, file[layer])]
    out = {}
    for collection, tree in variables.items():  # copies down to the network's layers
        out[collection] = dict(tree)
        if spec.model_name in tree.get("encoder", {}):
            encoder = out[collection]["encoder"] = dict(tree["encoder"])
            encoder[spec.model_name] = jax.tree.map(lambda x: x, encoder[spec.model_name])
    count = 0
    for layer, (collection, keys, leaf, array) in plan:
        value = np.asarray(array).astype(leaf.dtype)  # cast on the host, placed like the leaf
        _set(out[collection]["encoder"][spec.model_name][layer], keys,
             jax.device_put(value, leaf.sharding))
        count += value.size if collection == "params" else 0
    return out, count


