"""Entry point: `python -m fsjax.train --config experiments/original.py [overrides]`.

Overrides are tyro flags on the nested config (`--config.loss.eye-multiplier 2`) or Faceswap's own
train switches, short or long (`-A DIR -B DIR -m DIR -b 8 -P`, see `fsjax.config.switches`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import tyro

from fsjax.config import (
    MODEL_CHANGEABLE,
    ConfigError,
    ExperimentConfig,
    load_experiment,
    switches,
)

DESCRIPTION = (
    "Train a Faceswap model with fsjax. Without face folders it trains on built-in synthetic demo "
    "faces. Only swap faces with the consent of the people shown."
)


def split_config_path(argv: list[str]) -> tuple[str | None, list[str]]:
    """Takes `--config PATH` / `--config=PATH` out of argv (nested `--config.x` flags stay)."""
    path, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def expand_aliases(argv: list[str]) -> list[str]:
    """argv with Faceswap's train switches (`-b 8`, `--input-A DIR`, ...) as nested flags."""
    return switches.expand(argv)


def parse_cli(argv: list[str], *, prog: str = "python -m fsjax.train",
              description: str = DESCRIPTION) -> ExperimentConfig:
    """Loads the experiment file, then applies the command line's overrides."""
    path, rest = split_config_path(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(switches.help_text())  # Faceswap's switches first, then every option
    base = load_experiment(path) if path else ExperimentConfig()
    args = expand_aliases(rest)
    stored = None
    if path and pathlib.Path(path).is_dir():
        # A model folder's options are those it was built with, possibly outside the ranges the
        # command line accepts (Faceswap's ini does not check them): tyro must not rebuild them.
        given = {a.split("=")[0][len("--config.model."):].replace("-", "_")
                 for a in args if a.startswith("--config.model.")}
        if locked := sorted(given - set(MODEL_CHANGEABLE)):
            raise ConfigError(f"--config={path!r}: the model's options are locked when it is "
                              f"created and cannot be overridden on resume (model.{locked[0]}); "
                              f"only {', '.join('model.' + k for k in MODEL_CHANGEABLE)} may "
                              "change")
        stored, base = base.model, dataclasses.replace(base, model=ExperimentConfig().model)

    def _entry(config: ExperimentConfig = base) -> ExperimentConfig:
        return config

    config = tyro.cli(_entry, args=args, prog=prog, description=description)
    if stored is None:
        return config
    changed = {k: getattr(config.model, k) for k in given}  # the precision policy only
    return dataclasses.replace(config, model=dataclasses.replace(stored, **changed))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = parse_cli(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import jax

    from fsjax.training import distributed

    jax.config.update("jax_threefry_partitionable", True)
    distributed.start(config)  # before anything touches a device
    from fsjax.models import get_model_module

    try:  # options that only the model can check (Phaze-A's layer arithmetic)
        spec = get_model_module(config.model.name).build(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.train.summary:
        from fsjax.nn.precision import Policy
        from fsjax.training.summary import print_summary

        print_summary(spec.module, spec.name, spec.input_size,
                      policy=Policy.named(config.model.dtype))
        return 0

    from fsjax.checkpoint.state_file import ModelFolderError
    from fsjax.data.faces import DataError
    from fsjax.data.header import FaceFileError
    from fsjax.training.loop import train_and_evaluate
    from fsjax.training.lr_finder import LRFinderError

    try:
        train_and_evaluate(config)
    except (DataError, FaceFileError, ConfigError, ModelFolderError, FloatingPointError,
            LRFinderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
