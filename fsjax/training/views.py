"""The images a run makes at each save: the preview and the timelapse frame.

Both render through the preview's writer (the jitted inference path) from faces loaded once:
the preview from a fixed random choice of the training faces, the timelapse from the first
faces of its own folders. Every process renders (the forward pass may be a collective
computation); `Outputs` lets only the primary one write.
"""

from __future__ import annotations

import pathlib
from typing import Any

from fsjax.config import ExperimentConfig
from fsjax.data import pipeline
from fsjax.training.outputs import Outputs
from fsjax.training.preview import PreviewWriter, scale_image
from fsjax.training.timelapse import Timelapse, join_frames


class Views:
    """`at_save` writes the preview (file and/or TensorBoard) and the timelapse frame;
    `at_exit` joins the timelapse into a video when asked."""

    def __init__(self, config: ExperimentConfig, out: Outputs, spec_model: Any,
                 preview_source: tuple, timelapse_faces: tuple | None) -> None:
        self.train = config.train
        self.out = out
        self.spec_model = spec_model
        self.preview_source = preview_source  # (faces A, faces B, sample spec)
        self._preview: PreviewWriter | None = None
        self.timelapse = None if timelapse_faces is None else Timelapse(
            *timelapse_faces, preview_source[2], spec_model, self.train.timelapse_folder,
            count=self.train.preview_images)
        if self.timelapse is not None:
            out.say(f"Timelapse: {self.timelapse.count} faces per side, a frame at every save "
                    f"in {self.timelapse.folder}")

    def at_save(self, variables: Any, total: int) -> None:
        train = self.train
        if train.write_image or (train.preview_to_tensorboard and not train.no_logs):
            image = scale_image(self._preview_writer().render(variables), train.preview_scale)
            if train.write_image:
                self.out.preview(image)
            if train.preview_to_tensorboard:
                self.out.log_image("preview", total, image)
        if self.timelapse is not None:
            frame = self.out.timelapse(self.timelapse.folder, total,
                                       self.timelapse.render(variables))
            self.out.say(f"Timelapse frame {frame}")

    def _preview_writer(self) -> PreviewWriter:
        if self._preview is None:  # the same faces at every save, loaded once
            faces_a, faces_b, spec = self.preview_source
            n = min(self.train.preview_images, len(faces_a), len(faces_b))
            self._preview = PreviewWriter(
                pipeline.preview_batch(faces_a, faces_b, spec, n, seed=0), self.spec_model)
        return self._preview

    def at_exit(self) -> pathlib.Path | None:
        """`--timelapse-video`: the folder's frames as one MP4. The model is saved by then, so
        a failure is a warning, not an error."""
        if self.timelapse is None or not self.train.timelapse_video or not self.out.primary:
            return None
        try:
            video = join_frames(self.timelapse.folder)
        except (ValueError, OSError) as err:
            self.out.say(f"warning: the timelapse video was not written: {err}", error=True)
            return None
        self.out.say(f"Timelapse video: {video}")
        return video
