"""Read Faceswap's saved models without Keras: a Faceswap 3 `.keras` zip or a Faceswap 2 `.h5`.

Only zipfile, json and h5py touch the file, and only data is read: no layer is built, no Lambda's
code is looked at, nothing is unpickled (`optimizer.pt`, a torch pickle, is only noted). A file
is refused, naming it and the problem, before any weight is read when it
* is not a zip or HDF5 file, or lacks the model's config or weights;
* holds members outside the `.keras` layout, paths that escape the folder, or more uncompressed
  data than `MAX_BYTES`, or compresses better than `MAX_RATIO` (a zip bomb);
* has a layer that carries code (Lambda) or a class outside Keras and Faceswap's layers;
* has a weight whose shape or dtype is absurd, or HDF5 links/storage outside the file.

Weights come back as nested dicts keyed by Faceswap's names, model first:
`{"encoder": {"conv_128_0_conv2d": [kernel, bias]}, ...}`, each layer's weights in Keras order.
A weight is a `Weight`: its shape and dtype, checked when the file is read, and its values read
only when asked for (`np.asarray(weight)`, `read_arrays`). The importer compares every shape with
the layer it fills before it reads any value, so a file cannot make fsjax allocate more than the
model needs. `data.md` §5.1 (Keras 3) and §6.2 (Keras 2) describe the layouts.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import zipfile
from typing import Any

import h5py
import numpy as np

from fsjax.config import jsonfile

MAX_BYTES = 4 * 2**30  # 4 GiB: the largest Faceswap models are about 1.2 GB with optimizer
MAX_CONFIG_BYTES = 64 * 2**20
MAX_RATIO = 200  # float weights compress 1-3x; a 200x member is not a model
MAX_WEIGHT_ELEMENTS = 2**31  # no Faceswap layer holds more than ~0.3 G values
_SMALL = 64 * 2**10  # compact datasets live in the file's metadata, not its storage
KERAS_MEMBERS = ("metadata.json", "config.json", "model.weights.h5", "optimizer.pt")
WEIGHT_DTYPES = ("float16", "float32", "float64", "bfloat16", "int32", "int64")
CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")
# Where the layer classes of Faceswap models live (Keras 3 `module`, Keras 2 has none).
SAFE_MODULES = ("keras", "lib.model")
# The layer classes fsjax maps (those of every Faceswap model, in Keras 2 and Keras 3 spellings);
# anything else is refused by name rather than kept and written back out by an export.
KNOWN_CLASSES = frozenset({
    "Activation", "AdaInstanceNormalization", "Add", "AveragePooling2D", "BatchNormalization",
    "Concatenate", "Conv2D", "Conv2DTranspose", "Dense", "DepthwiseConv2D", "Dropout", "ELU",
    "Flatten", "Functional", "GaussianNoise", "GlobalAveragePooling2D", "GroupNormalization",
    "InputLayer", "InstanceNormalization", "KResizeImages", "LayerNormalization", "LeakyReLU",
    "MaxPooling2D", "Model", "Multiply", "Normalization", "PReLU", "PixelShuffler", "ReLU",
    "ReflectionPadding2D", "RMSNormalization", "Rescaling", "Reshape", "SeparableConv2D",
    "SpatialDropout2D", "Swish", "UpSampling2D", "ZeroPadding2D",
    # Phaze-A's pretrained encoders: Keras-Applications networks, the input scaling ops Faceswap
    # puts before them (keras.src.ops.numpy Multiply / Subtract) and Faceswap's CLIP layers.
    "ClassEmbedding", "Cropping2D", "CustomScaleLayer", "Dot", "GetItem", "GlobalMaxPooling2D",
    "LayerScale", "MultiHeadAttention", "PositionalEmbedding", "Projection", "QuickGELU",
    "Sequential", "Subtract"})

Weights = dict[str, Any]  # nested: model -> (sub-model ->) layer -> list of Weight


class SubLayers(dict):
    """The weights of a layer built from inner layers (Keras' MultiHeadAttention: `query`,
    `key`, `value`, `attention_output`), by inner layer: `{name: [Weight, ...]}`."""


class KerasFileError(ValueError):
    """The file cannot be imported; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class Weight:
    """One stored weight, checked (shape, dtype, storage) but not read: `np.asarray` reads it."""

    file: h5py.File  # the weights file, held open so that what is read is what was checked
    where: str  # its path in that file
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = np.asarray(self.file[self.where][()])
        return array if dtype is None else array.astype(dtype, copy=False)


@dataclasses.dataclass
class KerasModel:
    """What a Faceswap model file holds. Its weights are read from the open file: `close()`
    when done with them."""

    path: pathlib.Path
    format: str  # "keras3" or "keras2"
    config: dict[str, Any]  # the functional model's config (layers, inputs, outputs)
    weights: Weights
    keras_version: str
    has_optimizer: bool
    file_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # as in the file
    file: h5py.File | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def read_optimizer(path: pathlib.Path) -> bytes:
    """The bytes of the `optimizer.pt` member of a `.keras` file checked by `read`."""
    with zipfile.ZipFile(path) as archive:
        return _read_member(pathlib.Path(path), archive, "optimizer.pt", MAX_BYTES)


def read(path: pathlib.Path) -> KerasModel:
    """Reads `<name>.keras` (Faceswap 3) or `<name>.h5` (Faceswap 2)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise KerasFileError(f"{path}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise KerasFileError(f"{path}: {path.stat().st_size:,} bytes is larger than any "
                             f"Faceswap model ({MAX_BYTES:,} allowed)")
    if zipfile.is_zipfile(path):
        return _read_keras3(path)
    if h5py.is_hdf5(path):
        return _read_keras2(path)
    raise KerasFileError(f"{path}: neither a Keras 3 .keras zip nor a Keras 2 .h5 file")


def _read_keras3(path: pathlib.Path) -> KerasModel:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        for name, info in members.items():
            if name not in KERAS_MEMBERS:
                raise KerasFileError(f"{path}: unexpected member {name!r} in the .keras zip "
                                     f"(a Faceswap model holds only {', '.join(KERAS_MEMBERS)})")
            if info.file_size > MAX_BYTES:
                raise KerasFileError(f"{path}: member {name} claims {info.file_size:,} bytes")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
                raise KerasFileError(f"{path}: member {name} expands {info.file_size:,} bytes "
                                     f"from {info.compress_size:,} (a zip bomb?)")
        for needed in ("config.json", "model.weights.h5"):
            if needed not in members:
                raise KerasFileError(f"{path}: no {needed} in the .keras zip")
        config = _json(path, _read_member(path, archive, "config.json", MAX_CONFIG_BYTES))
        metadata = (_json(path, _read_member(path, archive, "metadata.json", MAX_CONFIG_BYTES))
                    if "metadata.json" in members else {})
        check_config(path, config)
        blob = _read_member(path, archive, "model.weights.h5", MAX_BYTES)
    weights_file = _open_h5(path, io.BytesIO(blob))
    try:
        weights = _keras3_weights(path, weights_file)
    except BaseException:
        weights_file.close()
        raise
    return KerasModel(path, "keras3", config.get("config", {}), weights,
                      str(metadata.get("keras_version", "")), "optimizer.pt" in members, config,
                      weights_file)


def _open_h5(path: pathlib.Path, source: Any) -> h5py.File:
    try:
        return h5py.File(source, "r")
    except OSError as err:
        raise KerasFileError(f"{path}: the weights are not a readable HDF5 file ({err})") from None


def _read_member(path: pathlib.Path, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """Reads a member, stopping at `limit` bytes whatever its header claims."""
    out = io.BytesIO()
    with archive.open(name) as member:
        while chunk := member.read(2**22):
            if out.tell() + len(chunk) > limit:
                raise KerasFileError(f"{path}: member {name} is larger than {limit:,} bytes")
            out.write(chunk)
    return out.getvalue()


def _json(path: pathlib.Path, text: bytes | str) -> dict[str, Any]:
    try:
        value = jsonfile.parse(text)
    except ValueError as err:
        raise KerasFileError(f"{path}: the model config is not JSON ({err})") from None
    if not isinstance(value, dict):
        raise KerasFileError(f"{path}: the model config is not a JSON object")
    return value


def check_config(path: pathlib.Path, config: dict[str, Any]) -> None:
    """Refuses layers that carry code or come from outside Keras and Faceswap."""
    for layer in _layers(config):
        name = layer.get("config", {}).get("name", "?") if isinstance(layer, dict) else "?"
        cls = layer.get("class_name") if isinstance(layer, dict) else None
        if not isinstance(cls, str):
            raise KerasFileError(f"{path}: layer {name!r} has no class name")
        if cls in CODE_LAYERS:
            raise KerasFileError(f"{path}: layer {name!r} is a {cls} layer, which carries code; "
                                 "no Faceswap model has one, and fsjax never runs a file's code")
        registered = layer.get("registered_name")
        if cls not in KNOWN_CLASSES or (registered is not None and (
                not isinstance(registered, str) or registered.rpartition(">")[2] != cls)):
            raise KerasFileError(f"{path}: layer {name!r} has class {cls!r} (registered as "
                                 f"{registered!r}), which is not a layer class of Faceswap's "
                                 "models that fsjax knows")
        module = layer.get("module")
        if module is not None and not (isinstance(module, str) and any(
                module == m or module.startswith(m + ".") for m in SAFE_MODULES)):
            raise KerasFileError(f"{path}: layer {name!r} ({cls}) comes from module {module!r}, "
                                 "which is neither Keras nor Faceswap")


def _layers(config: Any, depth: int = 0):
    """Every layer config in a (nested) functional config."""
    if depth > 16:
        raise KerasFileError("the model config nests deeper than 16 models")
    if not isinstance(config, dict):
        return
    yield config
    inner = config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
        for layer in inner["layers"]:
            yield from _layers(layer, depth + 1)


def layer_classes(config: dict[str, Any]):
    """`(sub-model, layer, class name, trainable)` for every layer inside the model's sub-models,
    in config order (which is Keras's layer and variable order); layers of models nested in a
    sub-model are listed under that sub-model, as fsjax names them."""
    def inner(layer: dict[str, Any], sub: str, trainable: bool):
        for child in layer.get("config", {}).get("layers", []):
            if not isinstance(child, dict):
                continue
            conf = child.get("config", {})
            name = str(conf.get("name", child.get("name", "")))
            alive = trainable and conf.get("trainable", True) is not False
            if isinstance(conf.get("layers"), list):
                yield from inner(child, sub, alive)
            else:
                yield sub, name, child.get("class_name"), alive

    for top in config.get("layers", []):
        conf = top.get("config", {}) if isinstance(top, dict) else {}
        if isinstance(conf.get("layers"), list):
            yield from inner(top, str(conf.get("name", top.get("name"))),
                             conf.get("trainable", True) is not False)


def check_dataset(path: pathlib.Path, where: str, node: Any) -> None:
    """Refuses a dataset that is not a plain weight array stored in the file, has an absurd
    shape or dtype, or declares more data than the file stores for it."""
    if not isinstance(node, h5py.Dataset):
        raise KerasFileError(f"{path}: {where} is not a weight array")
    if node.is_virtual or node.external:
        raise KerasFileError(f"{path}: {where} stores its data outside the file")
    if node.dtype.name not in WEIGHT_DTYPES:
        raise KerasFileError(f"{path}: {where} has dtype {node.dtype}, not a weight's")
    size = int(np.prod(node.shape, dtype=np.int64)) if node.shape else 1
    if node.shape is None or size > MAX_WEIGHT_ELEMENTS or len(node.shape) > 6:
        raise KerasFileError(f"{path}: {where} has the absurd shape {node.shape}")
    # A chunked dataset may declare any shape and store nothing (unwritten chunks read as the
    # fill value): reading it would allocate the declared size. Weights are stored as written
    # (Keras compresses none), so what is read is bounded by what the file holds.
    stored = node.id.get_storage_size()
    if node.nbytes > max(stored * (MAX_RATIO if node.compression else 1), _SMALL):
        raise KerasFileError(f"{path}: {where} declares shape {node.shape} ({node.nbytes:,} "
                             f"bytes of {node.dtype}) but the file stores {stored:,} bytes of it")


def _weight(path: pathlib.Path, file: h5py.File, where: str, node: Any) -> Weight:
    check_dataset(path, where, node)
    return Weight(file, node.name, tuple(node.shape), node.dtype)


def _check_links(path: pathlib.Path, group: h5py.Group) -> None:
    links: list[str] = []

    def visit(name: str, link: Any) -> None:  # raising inside h5py's visitor would garble it
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            links.append(name)

    group.visititems_links(visit)  # every link, including those `visit` does not follow
    if links:
        raise KerasFileError(f"{path}: {links[0]} is a link; a saved model holds none")


def _keras3_weights(path: pathlib.Path, root: h5py.File) -> Weights:
    """`layers/<object>/vars` groups carry the layer's real name in their `name` attribute; a
    model's own layers sit under its `layers/`."""
    _check_links(path, root)

    def walk(group: h5py.Group, where: str) -> Weights:
        out: Weights = {}
        for key, child in group.get("layers", {}).items():
            child_where = f"{where}/layers/{key}"
            variables = child.get("vars")
            if variables is None or "name" not in variables.attrs:
                raise KerasFileError(f"{path}: {child_where} has no named vars group")
            name = _text(variables.attrs["name"])
            if name in out:
                raise KerasFileError(f"{path}: two layers named {name!r} in {where or '/'}")
            if "layers" in child:
                out[name] = walk(child, child_where)
                continue
            out[name] = numbered(variables, f"{child_where}/vars")
            inner = {k: c for k, c in child.items() if k != "vars" and isinstance(c, h5py.Group)}
            held = SubLayers({_text(c["vars"].attrs.get("name", k)): numbered(
                c["vars"], f"{child_where}/{k}/vars") for k, c in inner.items() if "vars" in c})
            held = SubLayers({k: v for k, v in held.items() if v})
            if held and out[name]:
                raise KerasFileError(f"{path}: {child_where} holds weights of its own and of "
                                     "inner layers")
            out[name] = held or out[name]
        return {k: v for k, v in out.items() if v != []}

    def numbered(variables: h5py.Group, where: str) -> list[Weight]:
        if sorted(variables) != [str(i) for i in range(len(variables))]:
            raise KerasFileError(f"{path}: {where} is not numbered 0..n")
        return [_weight(path, root, f"{where}/{i}", variables[str(i)])
                for i in range(len(variables))]

    return walk(root, "")


def _read_keras2(path: pathlib.Path) -> KerasModel:
    root = _open_h5(path, path)
    try:
        return _keras2(path, root)
    except BaseException:
        root.close()
        raise


def _keras2(path: pathlib.Path, root: h5py.File) -> KerasModel:
    _check_links(path, root)
    if "model_config" not in root.attrs:
        raise KerasFileError(f"{path}: no model_config attribute: not a saved Keras model")
    raw = root.attrs["model_config"]
    if len(raw) > MAX_CONFIG_BYTES:
        raise KerasFileError(f"{path}: the model config is larger than {MAX_CONFIG_BYTES:,}")
    config = _json(path, _text(raw))
    check_config(path, config)
    group = root.get("model_weights")
    if not isinstance(group, h5py.Group):
        raise KerasFileError(f"{path}: no model_weights group")
    weights: Weights = {}
    for model_name in group.attrs.get("layer_names", []):
        model_name = _text(model_name)
        sub = group.get(model_name)
        names = [_text(n) for n in sub.attrs.get("weight_names", [])] if sub else []
        for weight_name in names:  # "<layer>/<var>:0", in Keras order
            layer, _, _ = weight_name.rpartition("/")
            weight = _weight(path, root, f"model_weights/{model_name}/{weight_name}",
                             sub.get(weight_name))
            weights.setdefault(model_name, {}).setdefault(layer, []).append(weight)
    has_optimizer = "optimizer_weights" in root
    version = _text(root.attrs.get("keras_version", ""))
    return KerasModel(path, "keras2", config.get("config", {}), weights, version, has_optimizer,
                      config, root)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
