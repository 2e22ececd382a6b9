"""Reads the scalars of TensorBoard event files, fsjax's and Faceswap's alike, without TensorFlow.

An event file is a sequence of TFRecord frames (length, its CRC, an `Event` protocol buffer, its
CRC); tensorboardX ships the protobuf classes. fsjax and Faceswap 3 write `simple_value`
scalars; Faceswap 2's TensorFlow writer stores them as one-element tensors, also read here. A
file that a running training is writing may end in half a frame: reading stops before it. Only
protobuf messages are parsed; nothing in a file is executed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import struct

import numpy as np

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data
_DTYPES = {1: "<f4", 2: "<f8"}  # TensorFlow's DT_FLOAT, DT_DOUBLE


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    from tensorboardX.crc32c import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclasses.dataclass
class Series:
    """One tag's points in file order."""

    steps: list[int] = dataclasses.field(default_factory=list)
    wall_times: list[float] = dataclasses.field(default_factory=list)
    values: list[float] = dataclasses.field(default_factory=list)

    def add(self, step: int, wall_time: float, value: float) -> None:
        self.steps.append(step)
        self.wall_times.append(wall_time)
        self.values.append(value)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.steps, np.int64), np.asarray(self.wall_times, np.float64),
                np.asarray(self.values, np.float64))


def _scalar(value) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor" or value.tensor.dtype not in _DTYPES:
        return None
    tensor = value.tensor
    if tensor.tensor_content:
        data = np.frombuffer(tensor.tensor_content, _DTYPES[tensor.dtype])
        return float(data[0]) if data.size == 1 else None
    listed = tensor.float_val if tensor.dtype == 1 else tensor.double_val
    return float(listed[0]) if len(listed) == 1 else None


def read_scalars(path: pathlib.Path, series: dict[str, Series] | None = None
                 ) -> dict[str, Series]:
    """The scalars of one event file, by tag (added to `series` when given)."""
    from tensorboardX.proto import event_pb2

    series = {} if series is None else series
    data = pathlib.Path(path).read_bytes()
    at = 0
    while at + _HEADER <= len(data):
        (length, crc) = struct.unpack_from("<QI", data, at)
        if crc != _masked_crc(data[at:at + 8]):
            raise ValueError(f"{path}: not a TensorBoard event file (damaged frame length at "
                             f"byte {at})")
        end = at + _HEADER + length
        if end + _FOOTER > len(data):
            break  # half a frame: the writer is still at it
        try:
            event = event_pb2.Event.FromString(data[at + _HEADER:end])
        except Exception as err:  # protobuf's DecodeError: a damaged file
            raise ValueError(f"{path}: not a TensorBoard event file (frame at byte {at}: "
                             f"{err})") from err
        at = end + _FOOTER
        for value in event.summary.value:
            number = _scalar(value)
            if number is not None:
                series.setdefault(value.tag, Series()).add(event.step, event.wall_time, number)
    return series


def read_folder(folder: pathlib.Path) -> dict[str, Series]:
    """The scalars of every event file in `folder` (TensorBoard's `events.out.tfevents.*`),
    files in name order (their names start with the time they were opened)."""
    series: dict[str, Series] = {}
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        if path.is_file():
            read_scalars(path, series)
    return series
