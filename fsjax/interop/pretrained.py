"""`enc_load_weights`: a new Phaze-A model starts its pretrained network from ImageNet (or CLIP)
weights in a file the user already has. fsjax never downloads.

The file is the one Keras Applications (or Faceswap, for CLIP) keeps: by name
(`efficientnetb0_notop.h5`, ...) in `model.phaze_a.enc_weights_path` when that is a folder, in
`$KERAS_HOME/models`, else `~/.keras/models`; or `enc_weights_path` itself when it names a file.
It is read as data only, through the checks of `fsjax.interop.keras_file` (HDF5 datasets of
weight dtypes and sane shapes stored inside the file, no links): Keras 2's `save_weights` layout
(`layer_names` / `weight_names` attributes, what Keras Applications ships) or Keras 3's
`.weights.h5` (`layers/<name>/vars/<i>`). Layers are matched by name, each layer's arrays in
Keras' creation order, and every shape is checked before any value is placed.
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
from fsjax.interop.optimizer_state import OptimizerImportError, keras_order
from fsjax.models.encoders.backbone import BackboneSpec


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


def load(variables: dict[str, Any], spec: BackboneSpec, path: pathlib.Path) -> tuple[dict, int]:
    """`variables` (`{"params": ..., "batch_stats": ...}` of the whole model, placed arrays) with
    the pretrained network's layers replaced by the file's; and the parameter count loaded.

    Every layer of the network must be in the file with the same shapes; the file's other layers
    (a classification top) are ignored."""
    slots: dict[str, dict[str, tuple[str, Any]]] = {}
    for collection, tree in variables.items():
        for layer, leaves in tree.get("encoder", {}).get(spec.model_name, {}).items():
            for name, leaf in leaves.items():
                slots.setdefault(layer, {})[name] = (collection, leaf)
    root = keras_file._open_h5(path, path)
    try:
        return _load(variables, spec, path, slots, read_weights(path, root))
    finally:
        root.close()


def _load(variables: dict[str, Any], spec: BackboneSpec, path: pathlib.Path,
          slots: dict[str, dict[str, tuple[str, Any]]],
          file: dict[str, list[keras_file.Weight]]) -> tuple[dict, int]:
    missing = [layer for layer in slots if layer not in file]
    if missing:
        raise KerasFileError(f"{path}: no weights for layer(s) {', '.join(missing[:8])} of "
                             f"{spec.model_name}: is this the file for {spec.arch}?")
    plan = []
    for layer, held in slots.items():
        try:
            names = keras_order(held)
        except OptimizerImportError as err:
            raise KerasFileError(f"{path}: {layer}: {err}") from None
        arrays = file[layer]
        if len(arrays) != len(names):
            raise KerasFileError(f"{path}: layer {layer} holds {len(arrays)} arrays; fsjax's "
                                 f"has {names}")
        for name, array in zip(names, arrays, strict=True):
            collection, leaf = held[name]
            if tuple(array.shape) != tuple(leaf.shape):
                raise KerasFileError(f"{path}: {layer}/{name} has shape {tuple(array.shape)}; "
                                     f"the model needs {tuple(leaf.shape)} (dataset "
                                     f"{array.where})")
            plan.append((collection, layer, name, leaf, array))
    out = {}
    for collection, tree in variables.items():  # copies down to the network's layers
        out[collection] = dict(tree)
        if spec.model_name in tree.get("encoder", {}):
            encoder = out[collection]["encoder"] = dict(tree["encoder"])
            encoder[spec.model_name] = {k: dict(v) for k, v in encoder[spec.model_name].items()}
    count = 0
    for collection, layer, name, leaf, array in plan:
        value = np.asarray(array).astype(leaf.dtype)  # cast on the host, placed like the leaf
        out[collection]["encoder"][spec.model_name][layer][name] = jax.device_put(
            value, leaf.sharding)
        count += value.size if collection == "params" else 0
    return out, count
