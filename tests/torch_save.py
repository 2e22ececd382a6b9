"""`torch.save` for tests, without torch: protocol-2 opcodes written by hand, as torch spells them.

Containers, numbers, strings and `None` are plain pickle opcodes; a numpy array becomes torch's
`_rebuild_tensor_v2` call on a storage record (`archive/data/<key>`), which is all an optimizer's
`state_dict()` holds.
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Any

import numpy as np


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
