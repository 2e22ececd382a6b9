"""`torch.save` for tests, without torch: protocol-2 opcodes written by hand, as torch spells them.

Containers, numbers, strings and `None` are plain pickle opcodes; a numpy array becomes torch's
`_rebuild_tensor_v2` call on a storage record (`archive/data/<key>`), which is all an optimizer's
`state_dict()` holds. `write_pth` saves a state dict of tensors in torch's zip archive or its
pre-1.6 stream.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from fsjax.interop import torch_file


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


class _Writer:
    def __init__(self) -> None:
        self.storages: dict[str, bytes] = {}

    def emit(self, obj: Any) -> bytes:
        if obj is None:
            return b"N"
        if isinstance(obj, bool):
            return b"\x88" if obj else b"\x89"
        if isinstance(obj, int):
            return _int(obj)
        if isinstance(obj, float):
            return b"G" + struct.pack(">d", obj)
        if isinstance(obj, str):
            return _str(obj)
        if isinstance(obj, tuple):
            return b"(" + b"".join(self.emit(v) for v in obj) + b"t"
        if isinstance(obj, list):
            return b"](" + b"".join(self.emit(v) for v in obj) + b"e"
        if isinstance(obj, dict):
            items = b"".join(self.emit(k) + self.emit(v) for k, v in obj.items())
            return b"}" + (b"(" + items + b"u" if items else b"")
        if isinstance(obj, np.ndarray):
            return self.tensor(obj)
        raise TypeError(type(obj))

    def tensor(self, array: np.ndarray) -> bytes:
        array = np.array(array, np.float32, order="C")  # (ascontiguousarray makes 0-d 1-d)
        key = str(len(self.storages))
        self.storages[key] = array.tobytes()
        strides = tuple(int(s) // 4 for s in array.strides)
        pid = (b"(" + _str("storage") + _global("torch", "FloatStorage") + _str(key) + _str("cpu")
               + _int(array.size) + b"tQ")
        return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + _int(0)
                + _ints(array.shape) + _ints(strides) + b"\x89"
                + _global("collections", "OrderedDict") + b")R" + b"tR")


def torch_save(obj: Any) -> bytes:
    """The bytes `torch.save(obj, buffer)` writes for `obj` (arrays as float32 tensors)."""
    writer = _Writer()
    data = b"\x80\x02" + writer.emit(obj) + b"."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        for key, blob in writer.storages.items():
            archive.writestr(f"archive/data/{key}", blob)
        archive.writestr("archive/version", "3\n")
    return out.getvalue()


# --- a state dict of tensors, as torch.save writes it (zip archive or the pre-1.6 stream) --

_tuple = _ints


_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"


@dataclasses.dataclass
class _Entry:
    """One tensor as torch pickles it: a storage key, an offset and a size/stride view."""

    storage: str
    offset: int
    shape: tuple
    stride: tuple


def _layout(tensors: dict[str, np.ndarray], dtype=np.float32):
    """One storage per tensor; 2-d tensors are stored transposed (column-major strides) and
    the first tensor sits 3 elements into its storage, as views can."""
    entries, storages = {}, {}
    for i, (name, value) in enumerate(tensors.items()):
        value = np.asarray(value, np.float32).astype(dtype)
        key = str(i)
        if value.ndim == 2:
            storages[key] = value.T.ravel()
            entries[name] = _Entry(key, 0, value.shape, (1, value.shape[0]))
        else:
            pad = 3 if i == 0 else 0
            storages[key] = np.concatenate([np.full(pad, 7.0, dtype), value.ravel()])
            strides = np.cumprod((1,) + value.shape[:0:-1])[::-1] if value.ndim else ()
            entries[name] = _Entry(key, pad, value.shape, tuple(int(s) for s in strides))
    return entries, storages


_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
            np.dtype(ml_dtypes.bfloat16): "BFloat16Storage"}


def _state_pickle(entries: dict[str, _Entry], sizes: dict[str, int], legacy: bool,
                  dtype=np.float32) -> bytes:
    """OrderedDict of `_rebuild_tensor_v2` calls, then torch's `_metadata` attribute (BUILD)."""
    out = b"\x80\x02" + _ORDERED_DICT + b"("
    for name, entry in entries.items():
        pid = (b"(" + _str("storage") + _global("torch", _STORAGE[np.dtype(dtype)])
               + _str(entry.storage)
               + _str("cpu") + _int(sizes[entry.storage]) + (b"N" if legacy else b"") + b"tQ")
        out += _str(name) + _global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid
        out += _int(entry.offset) + _tuple(entry.shape) + _tuple(entry.stride)
        out += b"\x89" + _ORDERED_DICT + b"tR"
    metadata = b"}" + _str("_metadata") + _ORDERED_DICT + b"s"
    return out + b"u" + metadata + b"b."


def write_pth(path, tensors: dict[str, np.ndarray], *, legacy: bool = False,
              state: bytes | None = None, dtype=np.float32) -> None:
    """Save `tensors` as torch.save would; `state` replaces the object pickle (bad files)."""
    entries, storages = _layout(tensors, dtype)
    sizes = {k: v.size for k, v in storages.items()}
    state = _state_pickle(entries, sizes, legacy, dtype) if state is None else state
    if not legacy:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("archive/data.pkl", state)
            archive.writestr("archive/byteorder", "little")
            for key, data in storages.items():
                archive.writestr(f"archive/data/{key}", data.tobytes())  # little-endian host
            archive.writestr("archive/version", "3\n")
        return
    out = io.BytesIO()
    for header in (torch_file._LEGACY_MAGIC, torch_file._LEGACY_PROTOCOL,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 8}}):
        out.write(pickle.dumps(header, protocol=2))
    out.write(state)
    out.write(pickle.dumps(list(storages), protocol=2))
    for data in storages.values():
        out.write(struct.pack("<q", data.size) + data.tobytes())
    path.write_bytes(out.getvalue())
