"""Faceswap's timelapse: the same faces through the model at every save, one image per save.

The faces are the first `preview_images` (14) of each timelapse folder in name order, read and
checked by the training loader before the model is built, and rendered by the preview's own
writer (the jitted inference path, the preview's layout). Faceswap names a frame by its Unix time
(`<time>.jpg`); fsjax writes lossless PNGs named `<time>_<iteration>.png`, so frames sort in
the order they were made and two saves in one second do not overwrite each other.
`join_frames` turns a folder of frames into an MP4 (OpenCV's writer) or a GIF (Pillow).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from fsjax.data import pipeline
from fsjax.data.faces import FaceMeta, SampleSpec
from fsjax.training.preview import PreviewWriter

VIDEO = "timelapse.mp4"
"""The file `--timelapse-video` writes into the timelapse folder."""


def frame_name(iteration: int, when: float | None = None) -> str:
    """`<unix time>_<iteration>.png`: in time order when sorted by name."""
    return f"{int(time.time() if when is None else when)}_{iteration:07d}.png"


@dataclasses.dataclass
class Timelapse:
    """Renders timelapse frames of a fixed set of faces (`count` per side)."""

    faces_a: Sequence[FaceMeta]
    faces_b: Sequence[FaceMeta]
    spec: SampleSpec
    spec_model: object
    folder: pathlib.Path
    count: int = 14

    def __post_init__(self) -> None:
        self.count = min(self.count, len(self.faces_a), len(self.faces_b))
        self._writer: PreviewWriter | None = None

    def render(self, variables) -> np.ndarray:
        """The frame of the model `variables` (uint8 BGR, the preview's layout)."""
        if self._writer is None:  # the faces are loaded once, at the first frame
            batch = pipeline.preview_batch(self.faces_a, self.faces_b, self.spec, self.count,
                                           seed=None)
            self._writer = PreviewWriter(batch, self.spec_model)
        return self._writer.render(variables)


def list_frames(folder: pathlib.Path) -> list[pathlib.Path]:
    """The frames of a timelapse folder, in name (= time) order."""
    return sorted((p for p in pathlib.Path(folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg") and p.is_file()),
                  key=lambda p: p.name)


def join_frames(folder: pathlib.Path, output: pathlib.Path | None = None, *,
                fps: float = 10.0) -> pathlib.Path:
    """Joins the frames of `folder` (PNG, or Faceswap's JPG) into `output` (.mp4 or .gif;
    default `<folder>/timelapse.mp4`). Frames of another size (a session with another number
    of faces) are resized to the first frame's. Returns the path written."""
    import cv2

    folder = pathlib.Path(folder)
    output = pathlib.Path(output) if output is not None else folder / VIDEO
    kind = output.suffix.lower()
    if kind not in (".mp4", ".gif"):
        raise ValueError(f"{output}: the timelapse video must end in .mp4 or .gif")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such timelapse folder")
    paths = list_frames(folder)
    if not paths:
        raise ValueError(f"{folder}: no timelapse frames (.png or .jpg) to join")
    first = None
    frames = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        if first is None:  # MPEG-4 needs even sides: pad with the preview's white
            first = (image.shape[0] + image.shape[0] % 2, image.shape[1] + image.shape[1] % 2)
        if image.shape[:2] != first:
            if abs(image.shape[0] - first[0]) > 1 or abs(image.shape[1] - first[1]) > 1:
                image = cv2.resize(image, (first[1], first[0]), interpolation=cv2.INTER_AREA)
            image = cv2.copyMakeBorder(image, 0, first[0] - image.shape[0], 0,
                                       first[1] - image.shape[1], cv2.BORDER_CONSTANT,
                                       value=(255, 255, 255))
        frames.append(image)
    tmp = output.with_name(f".{output.name}.tmp{kind}")
    if kind == ".mp4":
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                 (first[1], first[0]))
        if not writer.isOpened():
            raise OSError(f"{output}: OpenCV cannot write MPEG-4 video here")
        for frame in frames:
            writer.write(frame)
        writer.release()
    else:
        from PIL import Image

        images = [Image.fromarray(f[..., ::-1]) for f in frames]
        images[0].save(tmp, save_all=True, append_images=images[1:],
                       duration=max(int(round(1000 / fps)), 20), loop=0)
    tmp.replace(output)
    return output
