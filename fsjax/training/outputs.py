"""What a run writes besides its checkpoints, in one place that knows which process writes.

The console lines, the state file, `config.json`, backups, snapshots, the preview image, the
TensorBoard scalars and the learning-rate finder's graph are the primary process's alone: on
every other process these calls do nothing, so the loop never asks which process it runs on.
(Orbax's checkpoint saves are collective and go through `fsjax.checkpoint.manager` on every
process.)
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from fsjax.checkpoint import folder, state_file
from fsjax.config import ExperimentConfig
from fsjax.training.logs import MetricLogger, console
from fsjax.training.preview import write_preview
from fsjax.training.timelapse import frame_name


class Outputs:
    """The model folder's files and the console, written only when `primary`."""

    def __init__(self, primary: bool, model_dir: pathlib.Path, name: str) -> None:
        self.primary = primary
        self.model_dir = pathlib.Path(model_dir)
        self.name = name
        self._logger: MetricLogger | None = None

    def open_logs(self, folder: pathlib.Path | None) -> None:
        """Starts this session's TensorBoard folder (None: no logs)."""
        if self.primary and folder is not None:
            self._logger = MetricLogger(folder)

    def say(self, line: str, *, error: bool = False, end: str = "\n") -> None:
        """A console line (to stderr with `error`: warnings, progress)."""
        if self.primary:
            console(line, error=error, end=end)

    def write_state(self, model_state: dict[str, Any]) -> None:
        """`<name>_state.json`, replaced atomically."""
        if self.primary:
            state_file.write_state(state_file.state_path(self.model_dir, self.name), model_state)

    def write_config(self, config: ExperimentConfig) -> None:
        """`config.json`: the whole experiment, to resume or reproduce it."""
        if self.primary:
            state_file.write_text_atomic(self.model_dir / "config.json",
                                         state_file.experiment_json(config))

    def backup(self, step: int, step_dirs: list[pathlib.Path]) -> None:
        if self.primary:
            folder.write_backup(self.model_dir, self.name, step, step_dirs)

    def snapshot(self, step: int, step_dirs: list[pathlib.Path]) -> pathlib.Path:
        """Copies the save of `step` beside the model folder; returns where."""
        target = folder.snapshot_path(self.model_dir, step)
        if self.primary:
            folder.copy_save(self.model_dir, self.name, step_dirs, target, logs=True)
        return target

    def remove_leftovers(self) -> None:
        """The half-written copies of an interrupted run (the caller holds the folder lock)."""
        if self.primary:
            folder.remove_leftovers(self.model_dir, self.name)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars of one iteration."""
        if self._logger is not None:
            self._logger.write(step, values)

    def flush(self) -> None:
        if self._logger is not None:
            self._logger.flush()

    def preview(self, image: np.ndarray) -> None:
        """`training_preview.png` (rendered by every process: it may be a collective
        computation; written by the primary one)."""
        if self.primary:
            write_preview(self.model_dir / folder.PREVIEW, image)

    def log_image(self, tag: str, step: int, image: np.ndarray) -> None:
        """An image in this session's TensorBoard log (if logs are on)."""
        if self._logger is not None:
            self._logger.image(tag, step, image)

    def timelapse(self, folder: pathlib.Path, iteration: int, image: np.ndarray
                  ) -> pathlib.Path:
        """One timelapse frame into `folder` (created if missing); returns its path."""
        path = pathlib.Path(folder) / frame_name(iteration)
        if self.primary:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_preview(path, image)
        return path

    def graph(self, plot: Callable[[pathlib.Path], pathlib.Path]) -> pathlib.Path | None:
        """Runs `plot(model_dir)` (a figure written into the model folder); returns its path."""
        return plot(self.model_dir) if self.primary else None

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None
