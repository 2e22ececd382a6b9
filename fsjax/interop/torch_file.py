"""Read the tensors of a PyTorch `.pth` state dict without torch and without running the file.

A `.pth` file is a pickle, and unpickling runs whatever callables the pickle names. This reader
only lets a pickle name the handful of globals a state dict needs (`collections.OrderedDict`,
`torch._utils._rebuild_tensor[_v2]`, `torch._utils._rebuild_parameter` and the `torch.*Storage`
dtype markers); the tensor builders are replaced by functions that only record where each tensor's
bytes are. Any other global is refused before it is looked up, with an error naming the file.
The raw bytes are then read with numpy, with bounds checks, and only for the tensors asked for.

Both of torch's formats are read: the zip archive (torch >= 1.6: `<dir>/data.pkl` plus one
`<dir>/data/<key>` record per storage) and the older stream (magic number, version and system
pickles, the object pickle, the list of storage keys, then each storage as an int64 element count
and its little-endian bytes), which the torchvision and LPIPS weight files of 2017-2019 use.
"""

from __future__ import annotations

import io
import math
import pathlib
import pickle
import re
import struct
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, BinaryIO, NamedTuple

import ml_dtypes
import numpy as np

MAX_FILE_BYTES = 4 << 30  # torchvision's vgg16 file, classifier included, is 528 MiB
MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle is kilobytes; the bytes live elsewhere
MAX_ENTRIES = 100_000  # zip records, and tensors per file
MAX_NDIM = 8

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}
_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


class TorchFileError(ValueError):
    """A `.pth` file cannot be read safely; the message names the file and the reason."""


class _Malformed(Exception):
    """Raised inside the reader; re-raised as TorchFileError with the file name attached."""


# NamedTuples on purpose: pickle's BUILD opcode cannot set attributes on them, so a crafted
# pickle cannot alter a reference after it was checked.
class _StorageType(NamedTuple):
    dtype: np.dtype


class _Storage(NamedTuple):
    key: str
    dtype: np.dtype
    numel: int
    view_offset: int = 0  # legacy views: elements into the root storage
    view_numel: int | None = None


class _Tensor(NamedTuple):
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _text(value: Any) -> str:
    # Files written by Python 2 may hold these names as bytes.
    if isinstance(value, bytes):
        return value.decode("ascii")
    if not isinstance(value, str):
        raise _Malformed(f"expected a string, found {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Malformed(f"{what} must be a non-negative integer, found {value!r}")
    return value


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_NDIM:
        raise _Malformed(f"{what} must be a tuple of at most {MAX_NDIM} integers")
    return tuple(_int(v, what) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> _Tensor:
    """Stands in for torch's tensor builders: records where the tensor's elements are."""
    if not isinstance(storage, _Storage):
        raise _Malformed("a tensor does not refer to a storage")
    shape = _ints(size, "tensor size")
    strides = _ints(stride, "tensor stride")
    if len(shape) != len(strides):
        raise _Malformed("tensor size and stride differ in length")
    return _Tensor(storage, _int(storage_offset, "storage offset"), shape, strides)


def _rebuild_parameter(data: Any, *_: Any) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise _Malformed("a parameter does not wrap a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Unpickler that resolves only the allowed globals and torch's storage references."""

    def __init__(self, file: BinaryIO, path: pathlib.Path, *, fields: int) -> None:
        super().__init__(file)
        self._path = path
        self._fields = fields  # of a storage reference: 4 (zip), 5 (legacy), 0 (none allowed)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise TorchFileError(
            f"{self._path}: refused to load: its pickle asks for `{module}.{name}`, which a "
            "file of weights never needs (allowed: tensors, storages, OrderedDict). It may be "
            "a whole pickled model or a malicious file; nothing from it was run"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or _text(pid[0]) != "storage":
            raise _Malformed(f"unknown persistent id {str(pid)[:80]}")
        fields = pid[1:]
        if len(fields) != self._fields:
            raise _Malformed(f"unexpected storage reference with {len(fields)} fields")
        storage_type, key, _location, numel = fields[:4]
        if not isinstance(storage_type, _StorageType):
            raise _Malformed("storage reference without a storage type")
        key = _text(key)
        if not _KEY.fullmatch(key):
            raise _Malformed(f"bad storage key {key[:80]!r}")
        storage = _Storage(key, storage_type.dtype, _int(numel, "storage size"))
        known = self.storages.setdefault(key, storage)
        if known.dtype != storage.dtype or known.numel != storage.numel:
            raise _Malformed(f"storage {key} is referred to with two different types or sizes")
        view = fields[4] if self._fields == 5 else None
        if view is None:
            return storage
        if not isinstance(view, tuple) or len(view) != 3:
            raise _Malformed("bad storage view")
        offset = _int(view[1], "view offset")
        size = _int(view[2], "view size")
        if offset + size > storage.numel:
            raise _Malformed(f"a view of storage {key} runs past its end")
        return storage._replace(view_offset=offset, view_numel=size)


def _tensors(tree: Any) -> dict[str, _Tensor]:
    """Name -> tensor of a state dict; entries that are not tensors (metadata) are skipped."""
    if not isinstance(tree, dict):
        raise _Malformed(f"holds a {type(tree).__name__}, not a state dict")
    out = {}
    for name, value in tree.items():
        if isinstance(value, _Tensor):
            if not isinstance(name, str):
                raise _Malformed("a tensor name is not a string")
            out[name] = value
    if not out:
        raise _Malformed("holds no tensors")
    if len(out) > MAX_ENTRIES:
        raise _Malformed(f"holds more than {MAX_ENTRIES} tensors")
    return out


def _materialise(tensor: _Tensor, data: bytes | memoryview, little: bool) -> np.ndarray:
    """Copy one tensor out of its storage's bytes, after checking it lies inside them."""
    storage = tensor.storage
    dtype = storage.dtype
    count = storage.numel if storage.view_numel is None else storage.view_numel
    if len(data) < (storage.view_offset + count) * dtype.itemsize:
        raise _Malformed(f"storage {storage.key} is shorter than its declared size")
    numel = math.prod(tensor.shape)
    if numel > count:  # only overlapping strides could do this; refuse the memory blow-up
        raise _Malformed(f"a tensor has more elements than storage {storage.key}")
    if numel == 0:
        return np.zeros(tensor.shape, dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride,
                                                            strict=True))
    if last >= count:
        raise _Malformed(f"a tensor runs past the end of storage {storage.key}")
    flat = np.frombuffer(data, dtype, count=count, offset=storage.view_offset * dtype.itemsize)
    if little != (sys.byteorder == "little"):
        flat = flat.byteswap()
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :], tensor.shape, [s * dtype.itemsize for s in tensor.stride],
        writeable=False,
    )
    return np.array(view, order="C")  # a copy (also of 0-d tensors), independent of the file


def _select(tensors: dict[str, _Tensor], keys: Iterable[str] | None) -> dict[str, _Tensor]:
    if keys is None:
        return tensors
    keys = list(keys)
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise _Malformed(f"lacks the tensors {', '.join(missing[:8])}")
    return {k: tensors[k] for k in keys}


def _read_zip(file: BinaryIO, keys: Iterable[str] | None, max_pickle: int, path: pathlib.Path):
    with zipfile.ZipFile(file) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise _Malformed(f"has more than {MAX_ENTRIES} records")
        pickles = [i for i in infos if re.fullmatch(r"([^/]+/)?data\.pkl", i.filename)]
        if len(pickles) != 1:
            raise _Malformed("is a zip archive but not a torch save (no single data.pkl)")
        prefix = pickles[0].filename[: -len("data.pkl")]
        if pickles[0].file_size > max_pickle:
            raise _Malformed(f"has a {pickles[0].file_size} byte pickle (limit {max_pickle})")
        names = {i.filename: i for i in infos}
        little = True
        if prefix + "byteorder" in names:
            with archive.open(prefix + "byteorder") as record:
                order = record.read(8)
            if order not in (b"little", b"big"):
                raise _Malformed(f"unknown byte order {order[:16]!r}")
            little = order == b"little"
        with archive.open(pickles[0]) as record:
            data = record.read(max_pickle + 1)
        if len(data) > max_pickle:
            raise _Malformed(f"has a pickle over {max_pickle} bytes")
        unpickler = _Unpickler(io.BytesIO(data), path, fields=4)
        chosen = _select(_tensors(unpickler.load()), keys)
        out, cache = {}, {}
        for name, tensor in chosen.items():
            key = tensor.storage.key
            if key not in cache:
                info = names.get(f"{prefix}data/{key}")
                need = tensor.storage.numel * tensor.storage.dtype.itemsize
                if info is None or info.file_size < need:
                    raise _Malformed(f"storage record {key} is missing or too short")
                with archive.open(info) as record:  # only the declared bytes, however large
                    cache[key] = record.read(need)
            out[name] = _materialise(tensor, cache[key], little)
        return out


def _read_legacy(file: BinaryIO, keys: Iterable[str] | None, path: pathlib.Path, size: int):
    def plain() -> Any:
        # Header pickles hold only numbers, strings and containers.
        return _Unpickler(file, path, fields=0).load()

    if file.read(2)[:1] != b"\x80":
        raise _Malformed("is neither a zip archive nor a legacy torch file")
    file.seek(0)
    if plain() != _LEGACY_MAGIC or plain() != _LEGACY_PROTOCOL:
        raise _Malformed("is not a torch file (wrong magic number or version)")
    info = plain()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise _Malformed("was written on a big-endian machine, which is not supported")
    unpickler = _Unpickler(file, path, fields=5)
    chosen = _select(_tensors(unpickler.load()), keys)
    order = plain()
    if not isinstance(order, list) or len(order) > MAX_ENTRIES:
        raise _Malformed("has a bad storage list")
    # Storages follow one another: an int64 element count, then the elements.
    places: dict[str, int] = {}
    for key in order:
        key = _text(key)
        storage = unpickler.storages.get(key)
        if storage is None:
            raise _Malformed(f"lists storage {key[:80]!r}, which no tensor uses")
        (numel,) = struct.unpack("<q", file.read(8))
        if numel != storage.numel:
            raise _Malformed(f"storage {key} holds {numel} elements, not {storage.numel}")
        places[key] = file.tell()
        file.seek(numel * storage.dtype.itemsize, io.SEEK_CUR)
        if file.tell() > size:
            raise _Malformed("is truncated")
    out = {}
    for name, tensor in chosen.items():
        storage = tensor.storage
        if storage.key not in places:
            raise _Malformed(f"has no data for storage {storage.key}")
        file.seek(places[storage.key])
        out[name] = _materialise(tensor, file.read(storage.numel * storage.dtype.itemsize), True)
    return out


def read_state_dict(
    path: str | pathlib.Path,
    keys: Iterable[str] | None = None,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pickle_bytes: int = MAX_PICKLE_BYTES,
) -> dict[str, np.ndarray]:
    """The tensors of a `.pth` state dict as numpy arrays, in the file's order.

    Args:
        path: The `.pth` file (torch zip archive or the pre-1.6 stream format).
        keys: Names of the tensors wanted (only their bytes are read); None reads all.
        max_file_bytes: Larger files are refused before anything is read.
        max_pickle_bytes: Larger pickles inside a zip archive are refused.

    Returns:
        Name -> C-contiguous array with torch's shape and dtype (bfloat16 via ml_dtypes).

    Raises:
        TorchFileError: The file is missing, too large, malformed, lacks a requested tensor, or
            its pickle names any global outside the allowed set (nothing from it is run).
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise TorchFileError(f"{path}: cannot read it ({err.strerror})") from None
    if size > max_file_bytes:
        raise TorchFileError(f"{path}: {size} bytes is over the {max_file_bytes} byte limit")
    try:
        with open(path, "rb") as file:
            if zipfile.is_zipfile(file):
                file.seek(0)
                return _read_zip(file, keys, max_pickle_bytes, path)
            file.seek(0)
            return _read_legacy(file, keys, path, size)
    except TorchFileError:
        raise
    except (_Malformed, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, struct.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as err:
        detail = str(err) or type(err).__name__
        raise TorchFileError(f"{path}: not a readable torch state dict: {detail}") from None


def _fill(tree: Any, read: Any, depth: int = 0) -> Any:
    """`tree` with every tensor record replaced by its array (containers rebuilt as plain
    dicts, lists and tuples; anything else a pickle can hold without globals passes as is)."""
    if depth > 32:
        raise _Malformed("nests deeper than 32 levels")
    if isinstance(tree, _Tensor):
        return read(tree)
    if isinstance(tree, dict):
        return {k: _fill(v, read, depth + 1) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_fill(v, read, depth + 1) for v in tree)
    if tree is None or isinstance(tree, (bool, int, float, str, bytes)):
        return tree
    raise _Malformed(f"holds a {type(tree).__name__}, which a saved state never does")


def read_object(data: bytes, path: str | pathlib.Path, *,
                max_pickle_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Any object `torch.save` wrote as a zip archive (an optimizer's `state_dict()`, nested dicts
    and lists of numbers and tensors), with tensors as numpy arrays. The same allowed globals as
    `read_state_dict`: nothing from the file is run. `path` only names the file in errors."""
    path = pathlib.Path(path)
    try:
        file = io.BytesIO(data)
        if not zipfile.is_zipfile(file):
            raise _Malformed("is not a torch zip archive")
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ENTRIES:
                raise _Malformed(f"has more than {MAX_ENTRIES} records")
            pickles = [i for i in infos if re.fullmatch(r"([^/]+/)?data\.pkl", i.filename)]
            if len(pickles) != 1 or pickles[0].file_size > max_pickle_bytes:
                raise _Malformed("has no single data.pkl within the size limit")
            prefix = pickles[0].filename[: -len("data.pkl")]
            names = {i.filename: i for i in infos}
            with archive.open(pickles[0]) as record:
                unpickler = _Unpickler(io.BytesIO(record.read(max_pickle_bytes + 1)), path,
                                       fields=4)
                tree = unpickler.load()
            little = True
            if prefix + "byteorder" in names:
                little = archive.read(prefix + "byteorder")[:8] == b"little"
            count = [0]

            def read(tensor: _Tensor) -> np.ndarray:
                count[0] += 1
                if count[0] > MAX_ENTRIES:
                    raise _Malformed(f"holds more than {MAX_ENTRIES} tensors")
                key = tensor.storage.key
                info = names.get(f"{prefix}data/{key}")
                need = tensor.storage.numel * tensor.storage.dtype.itemsize
                if info is None or info.file_size < need:
                    raise _Malformed(f"storage record {key} is missing or too short")
                with archive.open(info) as record:
                    return _materialise(tensor, record.read(need), little)

            return _fill(tree, read)
    except TorchFileError:
        raise
    except (_Malformed, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, struct.error,
            ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError) as err:
        detail = str(err) or type(err).__name__
        raise TorchFileError(f"{path}: not a readable torch save: {detail}") from None
