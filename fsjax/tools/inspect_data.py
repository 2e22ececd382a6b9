"""Shows what the model will see: training samples of an experiment, written as images and arrays.

    python -m fsjax.tools.inspect_data --config experiments/original.py \
        --faces-a ~/faces/a --faces-b ~/faces/b --out /tmp/inspect [--num 8] [--seed 0] \
        [--no-augment] [--npz] [--config.data.coverage 87.5 ...]

Crops, masks and augmentation come from the experiment and the same overrides (and Faceswap-style
short forms) as `fsjax.train`, through the same loader and pipeline as training, so a wrong
coverage, centering or mask shows up here before hours of training are spent on it.

Writes `<out>/samples_a.png` and `<out>/samples_b.png`: one column per face (the first `--num`
faces of the training stream for `--seed`) after a label column, and three rows: the input as the
model sees it (warped, at the model's input size), the target, and the target with the face mask
(outside tinted red, as in the training preview), eye mask (green) and mouth mask (blue) overlaid.
Faces are scaled up by a whole factor so that each tile is at least 128 px (nearest neighbour).
`--no-augment` turns every augmentation off (colour, rotation, zoom, shift, flip and warp).

`--npz` also writes `<out>/samples.npz` with, for every face of each side (prefix `a_` / `b_`) in
file-name order: `files` (names), `images` (un-augmented target crops, uint8 BGR N x S x S x 3),
`mask_face` / `mask_eye` / `mask_mouth` (uint8 N x S x S, those the experiment trains with) and
`landmarks` (float32 N x 68 x 2, crop pixels), where S is the model's processing size.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import sys
from collections.abc import Sequence

import cv2
import numpy as np

from fsjax.config import AugmentConfig, ConfigError, ExperimentConfig
from fsjax.data.augment import MASK_KEYS
from fsjax.data.faces import FaceMeta, SampleSpec, load_sample
from fsjax.train import parse_cli
from fsjax.training.preview import MASK_COLOR_BGR, MASK_OPACITY, write_preview

PROG = "python -m fsjax.tools.inspect_data"
MIN_TILE = 128  # smallest tile side in the grid, so 64 px faces stay readable
ROW_LABELS = ("input", "target", "masks")
# Tints (BGR) and opacities: the face mask tints *outside* the face like the training preview;
# the eye and mouth masks tint *inside* their area.
TINTS = {
    "mask_face": ("face", MASK_COLOR_BGR, MASK_OPACITY, False),
    "mask_eye": ("eye", np.array([0.0, 1.0, 0.0], np.float32), 0.5, True),
    "mask_mouth": ("mouth", np.array([1.0, 0.3, 0.0], np.float32), 0.5, True),
}
_VALUE_FLAGS = {"--out": "out", "--num": "num", "--seed": "seed"}
_SWITCHES = {"--no-augment": "no_augment", "--npz": "npz"}

DESCRIPTION = (
    "Write a grid of training samples per side (input as the model sees it, target, target with "
    "masks) to <out>/samples_a.png and samples_b.png. Tool options: --out DIR (required), "
    "--num N (faces per side in the grid, default 8), --seed S (default 0), --no-augment (no "
    "augmentation at all), --npz (also write <out>/samples.npz with every face's crop, masks and "
    "landmarks). The experiment's options are set as in training, with Faceswap's train switches."
)


@dataclasses.dataclass(frozen=True)
class ToolOptions:
    """The options of this tool (the rest of the command line configures the experiment)."""

    out: pathlib.Path | None = None
    num: int = 8
    seed: int = 0
    no_augment: bool = False
    npz: bool = False


def split_tool_options(argv: Sequence[str]) -> tuple[ToolOptions, list[str]]:
    """Takes this tool's own flags out of argv; the rest goes to the experiment parser.

    Raises:
        ConfigError: a flag without its value or with a value of the wrong kind.
    """
    values: dict[str, object] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in _VALUE_FLAGS:
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{flag} needs a value")
                value, i = argv[i + 1], i + 1
            values[_VALUE_FLAGS[flag]] = value
        elif flag in _SWITCHES and not eq:
            values[_SWITCHES[flag]] = True
        else:
            rest.append(argv[i])
        i += 1
    for name in ("num", "seed"):
        if name in values:
            try:
                values[name] = int(values[name])
            except ValueError:
                raise ConfigError(f"--{name}={values[name]!r} is not an integer") from None
    if "out" in values:
        values["out"] = pathlib.Path(values["out"])
    options = ToolOptions(**values)
    if options.num < 1:
        raise ConfigError(f"--num={options.num} is out of range: allowed 1 or more")
    if options.seed < 0:
        raise ConfigError(f"--seed={options.seed} is out of range: allowed 0 or more")
    return options, rest


def no_augmentation(cfg: AugmentConfig) -> AugmentConfig:
    """Every augmentation off: the pipeline's identity affine then leaves the crop untouched."""
    return dataclasses.replace(cfg, zoom_amount=0.0, rotation_range=0.0, shift_range=0.0,
                               no_flip=True, no_warp=True, no_augment_color=True)


def tile_size(size: int) -> int:
    """Grid tile side: `size` times the smallest whole factor reaching MIN_TILE."""
    return size * max(1, -(-MIN_TILE // size))


def _to_tile(image: np.ndarray, tile: int, seen_size: int | None = None) -> np.ndarray:
    """float32 (tile, tile, 3) in [0, 1]; first box-resized to `seen_size` (what the model gets)."""
    image = np.asarray(image)
    if seen_size is not None and seen_size != image.shape[0]:
        image = cv2.resize(image, (seen_size, seen_size), interpolation=cv2.INTER_AREA)
    image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_NEAREST)
    return image.reshape(tile, tile, -1).astype(np.float32) / 255.0


def overlay_masks(target: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Tints float (S, S, 3) `target` with each (S, S, 1) float mask in `masks` (see TINTS)."""
    out = target
    for key in MASK_KEYS:
        if key not in masks:
            continue
        _, color, opacity, inside = TINTS[key]
        mask = masks[key]
        amount = opacity * (mask if inside else 1.0 - mask)
        out = out * (1.0 - amount) + color * amount
    return out


def _label_tile(row: str, tile: int, mask_keys: Sequence[str]) -> np.ndarray:
    """White tile naming a row; the masks row lists each mask in its own tint."""
    canvas = np.full((tile, tile, 3), 255, np.uint8)
    scale = tile / 280
    lines: list[tuple[str, tuple[int, int, int]]] = [(row, (0, 0, 0))]
    if row == "input":
        lines.append(("(warped)", (0, 0, 0)))
    if row == "masks":
        lines += [(TINTS[k][0], tuple(int(c * 255) for c in TINTS[k][1])) for k in mask_keys]
        if not mask_keys:
            lines.append(("(none)", (0, 0, 0)))
    step = max(1, tile // 7)
    for i, (text, color) in enumerate(lines):
        cv2.putText(canvas, text, (tile // 16, step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    color, 1, cv2.LINE_AA)
    return canvas


def render_samples(batch: dict[str, np.ndarray], input_size: int) -> np.ndarray:
    """The grid of one side: rows input / target / masks, a label column, one column per face.

    Args:
        batch: one side of a training batch: "input", "target" uint8 (n, S, S, 3) and the
            masks uint8 (n, S, S, 1) that the experiment uses.
        input_size: the model's input size (the input row is shown at that resolution).

    Returns:
        uint8 BGR image of 3 T rows by (n + 1) T columns, T = `tile_size(S)`.
    """
    n, size = batch["target"].shape[:2]
    tile = tile_size(size)
    mask_keys = [k for k in MASK_KEYS if k in batch]
    columns = [np.concatenate([_label_tile(r, tile, mask_keys) for r in ROW_LABELS], axis=0)]
    for i in range(n):
        target = _to_tile(batch["target"][i], tile)
        masks = {k: _to_tile(batch[k][i], tile) for k in mask_keys}
        cells = (_to_tile(batch["input"][i], tile, input_size), target,
                 overlay_masks(target, masks))
        column = np.concatenate(cells, axis=0)
        columns.append(np.clip(np.rint(column * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(columns, axis=1)


def side_arrays(metas: Sequence[FaceMeta], spec: SampleSpec) -> dict[str, np.ndarray]:
    """Every face of one side, un-augmented, in the given (file-name) order, as stacked arrays."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # cv2 releases the GIL
        samples = list(pool.map(lambda meta: load_sample(meta, spec), metas))
    out = {"files": np.array([meta.path.name for meta in metas]),
           "images": np.stack([s["image"] for s in samples]),
           "landmarks": np.stack([s["landmarks"] for s in samples]).astype(np.float32)}
    for key in MASK_KEYS:
        if key in samples[0]:
            out[key] = np.stack([s[key].reshape(spec.size, spec.size) for s in samples])
    return out


def inspect(config: ExperimentConfig, options: ToolOptions) -> list[pathlib.Path]:
    """Writes the grids (and the npz); returns the paths written.

    Raises:
        DataError, FaceFileError: as training raises them for unusable folders or faces.
    """
    from fsjax.data import pipeline  # after parsing: --help stays quick
    from fsjax.data.stored_masks import STORED_MASK_TYPES
    from fsjax.models import get_model_module
    from fsjax.training.inputs import face_folders, sample_spec, scan_side

    model = get_model_module(config.model.name).build(config)
    folder_a, folder_b = face_folders(config)
    # Scanned exactly as training scans: same errors, bad-face handling and stored masks.
    stored = config.loss.mask_type if config.loss.mask_type in STORED_MASK_TYPES else None
    demo = config.data.uses_demo
    metas = {"a": scan_side("A", folder_a, config.data.bad_faces, stored, demo=demo),
             "b": scan_side("B", folder_b, config.data.bad_faces, stored, demo=demo)}
    spec = sample_spec(config, max((model.input_size,) + tuple(model.output_sizes)))
    augment = no_augmentation(config.augment) if options.no_augment else config.augment
    dataset = pipeline.make_train_dataset(metas["a"], metas["b"], spec, augment,
                                          batch_size=options.num, seed=options.seed)
    batch = dataset[0]
    out_dir = pathlib.Path(options.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for side in pipeline.SIDES:
        path = out_dir / f"samples_{side}.png"
        write_preview(path, render_samples(batch[side], model.input_size))
        written.append(path)
    if options.npz:
        arrays = {f"{side}_{key}": value for side in pipeline.SIDES
                  for key, value in side_arrays(metas[side], spec).items()}
        path = out_dir / "samples.npz"
        tmp = out_dir / "samples.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        options, rest = split_tool_options(argv)
        if options.out is None and not any(a in ("-h", "--help") for a in rest):
            raise ConfigError("--out DIR is required (where the images are written)")
        config = parse_cli(rest, prog=PROG, description=DESCRIPTION)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from fsjax.data.faces import DataError
    from fsjax.data.header import FaceFileError

    try:
        written = inspect(config, options)
    except (DataError, FaceFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
