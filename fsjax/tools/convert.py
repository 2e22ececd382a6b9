"""Swap faces with a trained model: `python -m fsjax.tools.convert MODEL_DIR -i FACES -o OUT`.

Faceswap's inference model (data.md §7) feeds a face through the shared encoder and the *other*
identity's path: A→B runs side B's path, `--switch-sides` (Faceswap's `--swap-model`) side A's.
Here that is the model's own `apply` on `(x, x)` with the unused side dropped: under `jit`, XLA
removes the dead decoder and merges the repeated encoder, so only the swap path is computed.

Each extracted face is cropped as training crops it (the model's centering and coverage), swapped
in fixed-size batches (`convert_batchsize`; the last batch is padded, so there is one compile) and
written as a PNG of the model's output size, with the predicted mask as alpha when the model
learned one. The model comes from an fsjax model folder, or a Faceswap `.keras` / `.h5` folder.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.config import ConfigError, ExperimentConfig
from fsjax.data import faces
from fsjax.data.faces import DataError
from fsjax.data.header import FaceFileError
from fsjax.training.preview import write_preview

DEFAULT_BATCH = 16  # Faceswap's convert_batchsize default


def load_model(model_dir: pathlib.Path) -> tuple[ExperimentConfig, Any, dict[str, Any]]:
    """`(config, model spec, variables)` of the newest save in an fsjax model folder, or of the
    Faceswap model file in a Faceswap model folder."""
    from fsjax.checkpoint.manager import Checkpoints
    from fsjax.config.faceswap_state import experiment_from_folder
    from fsjax.interop.keras_import import MODEL_SUFFIXES, load
    from fsjax.models import get_model_module

    model_dir = pathlib.Path(model_dir)
    if any(p.suffix in MODEL_SUFFIXES for p in model_dir.glob("*")) and not any(
            model_dir.glob("*_checkpoints")):
        model, variables = load(model_dir)
        return model.config, model.spec, variables
    config = experiment_from_folder(model_dir)
    spec = get_model_module(config.model.name).build(config)
    checkpoints = Checkpoints(model_dir, spec.name, writable=False)
    try:
        if checkpoints.latest_step() is None:
            raise ConfigError(f"{model_dir}: no saved model in it")
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    return config, spec, {"params": saved["params"], **saved.get("model_state", {})}


def make_swap_fn(module: Any, switch_sides: bool = False) -> Callable[..., tuple[Any, Any]]:
    """Jitted `swap(variables, faces) -> (face, mask or None)`: the largest output face of the
    other side's path (B for A→B), in inference mode."""
    side = "a" if switch_sides else "b"

    @jax.jit
    def swap(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        out = module.apply(variables, images, images)[side]
        return out["faces"][-1], out.get("mask")

    return swap


def convert_folder(model_dir: pathlib.Path, input_dir: pathlib.Path, output_dir: pathlib.Path,
                   *, switch_sides: bool = False, batch_size: int | None = None,
                   on_bad: str = "stop") -> int:
    """Writes the swapped face of every extracted face in `input_dir` to `output_dir` (same file
    stem, `.png`); returns how many. Bad face files stop it before any work (or are skipped with
    `on_bad="skip"`)."""
    scan = faces.scan_faces(input_dir, on_bad=on_bad, min_faces=1)  # before any model work
    config, spec, variables = load_model(model_dir)
    for path, reason in scan.skipped:
        print(f"warning: skipped {path}: {reason}", file=sys.stderr, flush=True)
    batch_size = batch_size or _convert_batchsize(pathlib.Path(model_dir))
    if batch_size < 1:
        raise ConfigError(f"--batch-size={batch_size}: must be at least 1")
    crop = faces.SampleSpec(size=spec.input_size, centering=config.data.centering,
                            coverage=config.data.coverage,
                            vertical_offset=config.data.vertical_offset, mask_type="none",
                            eye_mask=False, mouth_mask=False)
    swap = make_swap_fn(spec.module, switch_sides)
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metas = scan.faces
    direction = "B to A" if switch_sides else "A to B"
    print(f"Converting {len(metas)} faces ({direction}) with '{spec.name}' in batches of "
          f"{batch_size}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        def load(chunk: list[faces.FaceMeta]):
            return np.stack([faces.load_sample(m, crop)["image"] for m in chunk])

        chunks = [metas[i:i + batch_size] for i in range(0, len(metas), batch_size)]
        pending = pool.submit(load, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            images = pending.result()
            if index + 1 < len(chunks):  # decode the next batch while this one runs
                pending = pool.submit(load, chunks[index + 1])
            padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
            padded[: len(chunk)] = images / 255.0
            face, mask = jax.device_get(swap(variables, jnp.asarray(padded)))
            for i, meta in enumerate(chunk):
                _write(output_dir / f"{meta.path.stem}.png", face[i],
                       None if mask is None else mask[i])
    return len(metas)


def _convert_batchsize(model_dir: pathlib.Path) -> int:
    """The model's `convert_batchsize` option from its state file, else Faceswap's default."""
    from fsjax.config.faceswap_state import read_state

    for path in model_dir.glob("*_state.json"):
        value = read_state(path).get("config", {}).get("convert_batchsize")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_BATCH


def _write(path: pathlib.Path, face: np.ndarray, mask: np.ndarray | None) -> None:
    image = np.clip(np.rint(face * 255.0), 0, 255).astype(np.uint8)  # BGR, as Faceswap's faces
    if mask is not None:
        alpha = np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8)
        image = np.concatenate([image, alpha.reshape(*image.shape[:2], 1)], axis=-1)
    write_preview(path, image)  # encoded, then renamed into place


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsjax.tools.convert",
        description="Swap the faces of a folder of Faceswap-extracted faces with a trained model "
                    "(fsjax model folder, or a Faceswap folder with <plugin>.keras/.h5 and its "
                    "state file). Only swap faces with the consent of the people shown.")
    parser.add_argument("model_dir", type=pathlib.Path)
    parser.add_argument("-i", "--input-dir", type=pathlib.Path, required=True,
                        help="folder of extracted faces (the A side for A to B)")
    parser.add_argument("-o", "--output-dir", type=pathlib.Path, required=True)
    parser.add_argument("-s", "--switch-sides", action="store_true",
                        help="swap B to A instead of A to B (Faceswap's --swap-model)")
    parser.add_argument("-b", "--batch-size", type=int, default=None,
                        help=f"faces per batch (convert_batchsize; default {DEFAULT_BATCH})")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable face files with a warning instead of stopping")
    args = parser.parse_args(argv)
    try:
        count = convert_folder(args.model_dir, args.input_dir, args.output_dir,
                               switch_sides=args.switch_sides, batch_size=args.batch_size,
                               on_bad="skip" if args.skip_bad else "stop")
    except (ConfigError, DataError, FaceFileError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {count} swapped faces to {args.output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
