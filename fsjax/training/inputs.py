"""What a run reads before the model is built: the face folders (or the demo set), what each
training sample holds, and the data pipeline's seed."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable

import jax
import numpy as np

from fsjax.config import ExperimentConfig
from fsjax.data import faces
from fsjax.training.logs import console


def sample_spec(config: ExperimentConfig, process_size: int) -> faces.SampleSpec:
    """What each training sample holds, following Faceswap's mask rules (data.md §2.6)."""
    loss = config.loss
    need_face = loss.mask_type != "none" and (loss.penalized_mask_loss or loss.learn_mask)
    return faces.SampleSpec(
        size=process_size,
        centering=config.data.centering,
        coverage=config.data.coverage,
        vertical_offset=config.data.vertical_offset,
        mask_type=loss.mask_type if need_face else "none",
        mask_dilation=loss.mask_dilation,
        mask_blur_kernel=loss.mask_blur_kernel,
        mask_threshold=loss.mask_threshold,
        faceswap_compat=config.data.faceswap_compat,
        eye_mask=loss.penalized_mask_loss and loss.eye_multiplier > 1,
        mouth_mask=loss.penalized_mask_loss and loss.mouth_multiplier > 1,
    )


def face_folders(config: ExperimentConfig, say: Callable[..., None] = console
                 ) -> tuple[pathlib.Path, pathlib.Path]:
    """The user's folders, or the demo set (written on first use)."""
    if not config.data.uses_demo:
        return pathlib.Path(config.data.faces_a), pathlib.Path(config.data.faces_b)
    from fsjax.data import demo  # only the demo run needs the face generator

    root = config.data.demo_dir or demo.default_demo_dir()
    say(f"No face folders given: using the built-in demo faces in {root}")
    return demo.write_demo_faces(pathlib.Path(root), seed=0)


def scan_side(side: str, folder: pathlib.Path, on_bad: str, stored_mask: str | None = None, *,
              batch_size: int | None = None, demo: bool = False, min_faces: int = faces.MIN_FACES,
              say: Callable[..., None] = console) -> list[faces.FaceMeta]:
    """Scans one side's folder with a progress line, warning (through `say`) about skipped
    faces, about fewer faces than Faceswap recommends (not for the demo set, which is small on
    purpose) and about fewer faces than a batch holds."""
    show = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show and (done == total or done % 50 == 0):
            end = "\n" if done == total else ""
            say(f"\rScanning side {side}: {done}/{total} files", end=end, error=True)

    scan = faces.scan_faces(folder, on_bad=on_bad, progress=progress, stored_mask=stored_mask,
                            min_faces=min_faces)
    if scan.skipped:
        listed = "".join(f"\n  {path}: {reason}" for path, reason in scan.skipped[:20])
        more = f"\n  ... and {len(scan.skipped) - 20} more" if len(scan.skipped) > 20 else ""
        say(f"warning: side {side}: skipped {len(scan.skipped)} face files that cannot be "
            f"used:{listed}{more}", error=True)
    count = len(scan.faces)
    if count < faces.WARN_FACES and not demo and min_faces >= faces.MIN_FACES:
        say(f"warning: side {side} has only {count} faces; Faceswap recommends at "
            f"least {faces.WARN_FACES}", error=True)
    if batch_size is not None and batch_size > count:
        say(f"warning: side {side} has {count} faces, fewer than the batch size "
            f"{batch_size}: every batch holds some faces more than once", error=True)
    return scan.faces


def scan_timelapse(config: ExperimentConfig, stored_mask: str | None,
                   say: Callable[..., None] = console
                   ) -> tuple[list[faces.FaceMeta], list[faces.FaceMeta]] | None:
    """The timelapse faces of each side, checked like the training faces: the first
    `train.preview_images` usable ones in name order (None: no timelapse)."""
    train = config.train
    if train.timelapse_folder is None:
        return None
    chosen = []
    for side, folder in (("A", train.timelapse_input_a), ("B", train.timelapse_input_b)):
        metas = scan_side(f"timelapse {side}", pathlib.Path(folder), config.data.bad_faces,
                          stored_mask, min_faces=1, say=say)
        chosen.append(metas)
    count = min(train.preview_images, *map(len, chosen))
    return chosen[0][:count], chosen[1][:count]


def data_seed(key: jax.Array) -> int:
    """A host integer seed for the grain pipeline, derived from the run's root key."""
    return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
