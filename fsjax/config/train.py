"""The `faceswap.py train` switches (`--config.train.*`): folders, batch size, iteration counts,
saves, logs, the learning-rate finder and warmup, frozen and loaded sub-models."""

from __future__ import annotations

import dataclasses
import pathlib

from fsjax.config.checks import ConfigError, _check_range


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The `faceswap.py train` switches: folders, batch size, iteration counts, output."""

    model_dir: pathlib.Path = pathlib.Path("models/original")
    """Model folder (`-m`); created if missing, resumed if it holds a model."""
    batch_size: int = 16
    """Faces per side in each batch (1..256)."""
    iterations: int | None = None
    """Total iterations to reach (`-i`). Default: Faceswap's 1,000,000, or 300 on the demo faces."""
    save_interval: int = 250
    """Save the model every this many iterations (`-s`)."""
    snapshot_interval: int = 25_000
    """Iterations between snapshots (`-I`, 0 = off)."""
    write_image: bool = True
    """Write the preview `training_preview.png` into the model folder at each save (`-w`)."""
    preview_images: int = 14
    """Faces per side in the preview and the timelapse (2..16)."""
    preview_scale: int = 100
    """Size of the written preview in percent of the model's output size (`--preview-scale`,
    10..200): a 256 px model's full preview is 3072 px wide."""
    preview_to_tensorboard: bool = False
    """Also add the preview to this session's TensorBoard log, as image `preview`, at each
    save."""
    timelapse_input_a: pathlib.Path | None = None
    """Side A faces of the timelapse (`-x`, `--timelapse-input-A`): the first `preview_images`
    faces in name order go through the model at every save."""
    timelapse_input_b: pathlib.Path | None = None
    """Side B faces of the timelapse (`-y`, `--timelapse-input-B`)."""
    timelapse_output: pathlib.Path | None = None
    """Where the timelapse frames go (`-z`, `--timelapse-output`). Default:
    `<model_dir>/timelapse` when both inputs are given."""
    timelapse_video: bool = False
    """At the end of the run, also join every frame of the timelapse folder into
    `timelapse.mp4` there (`--timelapse-video`)."""
    no_logs: bool = False
    """Do not write TensorBoard logs (`-n`)."""
    status_every: int = 1
    """Read the metrics back and print the status line every this many iterations; NaN
    protection and TensorBoard still see every iteration."""
    summary: bool = False
    """Print the model summary and exit (`-u`)."""
    seed: int = 0
    """Root seed: initial weights, augmentation and sampling all derive from it."""
    warmup: int = 0
    """Ramp the learning rate linearly from 0 over this many optimizer steps at the start of
    each session (`--warmup`, 0 = off)."""
    use_lr_finder: bool = False
    """Find the learning rate before a new model trains, and use the found one when resuming
    (`--use-lr-finder`; settings in `optimizer.lr_finder_*`)."""
    nan_protection: bool = True
    """Stop, without saving, at the first non-finite loss or gradient."""
    load_weights: pathlib.Path | None = None
    """A new model starts its `load_layers` from this fsjax model folder (`--load-weights`;
    ignored when resuming)."""
    load_layers: tuple[str, ...] = ("encoder",)
    """Sub-models `load_weights` initializes (e.g. encoder, decoder_a, fc_a)."""
    freeze_weights: bool = False
    """Keep `freeze_layers` fixed: no updates and no optimizer state (`--freeze-weights`)."""
    freeze_layers: tuple[str, ...] = ("encoder",)
    """Sub-models `freeze_weights` keeps fixed (changeable on resume)."""
    compilation_cache: pathlib.Path | None = None
    """JAX's persistent compilation cache, so that the next run of the same model starts in
    seconds. Default: $JAX_COMPILATION_CACHE_DIR, else ~/.cache/fsjax/xla."""
    no_compilation_cache: bool = False
    """Compile everything afresh every run."""

    @property
    def timelapse_folder(self) -> pathlib.Path | None:
        """Where timelapse frames are written; None: no timelapse."""
        if self.timelapse_input_a is None:
            return None
        return self.timelapse_output or pathlib.Path(self.model_dir) / "timelapse"

    def __post_init__(self) -> None:
        _check_range("train.batch_size", self.batch_size, 1, 256)
        if self.iterations is not None:
            _check_range("train.iterations", self.iterations, 0, 5_000_000)
        _check_range("train.save_interval", self.save_interval, 1, 1_000_000)
        _check_range("train.snapshot_interval", self.snapshot_interval, 0, 1_000_000)
        _check_range("train.preview_images", self.preview_images, 2, 16)
        _check_range("train.preview_scale", self.preview_scale, 10, 200)
        _check_range("train.status_every", self.status_every, 1, 100_000)
        if (self.timelapse_input_a is None) != (self.timelapse_input_b is None):
            raise ConfigError("the timelapse needs both --timelapse-input-A and "
                              "--timelapse-input-B (train.timelapse_input_a/_b)")
        if self.timelapse_input_a is None and (self.timelapse_output is not None
                                               or self.timelapse_video):
            raise ConfigError("--timelapse-output and --timelapse-video need "
                              "--timelapse-input-A and --timelapse-input-B")
        _check_range("train.warmup", self.warmup, 0, 10_000_000)
        if self.load_weights is not None and not pathlib.Path(self.load_weights).is_dir():
            raise ConfigError(f"train.load_weights={str(self.load_weights)!r}: not a model folder")
