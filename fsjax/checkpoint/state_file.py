"""`<name>_state.json`: Faceswap's model state file (reference/data.md §5.2), written crash-safely.

Faceswap and its GUI read this file for the iteration count, session history and the options a
model was created with, so fsjax writes the same schema. Option names in `config` are Faceswap's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from fsjax.config import ExperimentConfig, jsonfile
from fsjax.config.plugins import FSJAX_ONLY_OPTIONS

# Faceswap options that may change between sessions (`fixed=False`); the rest are locked at
# creation.
CHANGEABLE = (
    "mixed_precision", "nan_protection", "convert_batchsize", "loss_function", "loss_function_2",
    "loss_weight_2", "loss_function_3", "loss_weight_3", "loss_function_4", "loss_weight_4",
    "mask_loss_function", "eye_multiplier", "mouth_multiplier", "mask_dilation", "mask_blur_kernel",
    "mask_threshold", "learning_rate", "epsilon_exponent", "save_optimizer", "gradient_clipping",
    "clipping_value", "autoclip_history", "weight_decay", "gradient_accumulation",
)
# fsjax's own changeable additions (not in Faceswap's file): written so a session's record is
# complete.
FSJAX_CHANGEABLE = ("dtype", "autoclip_per_tensor", "freeze_weights", "freeze_layers")


LOWMEM_PLUGINS = ("original", "dfl_h128", "villain", "unbalanced")


class ModelFolderError(ValueError):
    """The model folder cannot be used (another model type, an unreadable state file)."""


def faceswap_options(config: ExperimentConfig) -> dict[str, Any]:
    """The experiment expressed as Faceswap's `global` + plugin options, in Faceswap's order.

    Options fsjax does not implement yet are written with Faceswap's defaults, which is what fsjax
    does for them.
    """
    loss, opt = config.loss, config.optimizer
    options: dict[str, Any] = {
        "centering": config.data.centering,
        "coverage": config.data.coverage,
        "vertical_offset": config.data.vertical_offset,
        "icnr_init": config.model.icnr_init,
        "conv_aware_init": config.model.conv_aware_init,
        "lr_finder_iterations": opt.lr_finder_iterations,
        "lr_finder_mode": opt.lr_finder_mode,
        "lr_finder_strength": opt.lr_finder_strength,
        "reflect_padding": config.model.reflect_padding,
        # Faceswap's mixed precision is float16; bfloat16 has no Faceswap name (see `dtype`).
        "mixed_precision": config.model.dtype == "float16",
        "nan_protection": config.train.nan_protection,
        "convert_batchsize": 16,
        "loss_function": loss.loss_function,
        "loss_function_2": loss.loss_function_2,
        "loss_weight_2": loss.loss_weight_2,
        "loss_function_3": loss.loss_function_3,
        "loss_weight_3": loss.loss_weight_3,
        "loss_function_4": loss.loss_function_4,
        "loss_weight_4": loss.loss_weight_4,
        "mask_loss_function": loss.mask_loss_function,
        "eye_multiplier": loss.eye_multiplier,
        "mouth_multiplier": loss.mouth_multiplier,
        "penalized_mask_loss": loss.penalized_mask_loss,
        "mask_type": loss.mask_type,
        "mask_dilation": loss.mask_dilation,
        "mask_blur_kernel": loss.mask_blur_kernel,
        "mask_threshold": loss.mask_threshold,
        "learn_mask": loss.learn_mask,
        "optimizer": opt.optimizer,
        "learning_rate": opt.learning_rate,
        "epsilon_exponent": opt.epsilon_exponent,
        "save_optimizer": opt.save_optimizer,
        "gradient_clipping": opt.gradient_clipping,
        "clipping_value": opt.clipping_value,
        "autoclip_history": opt.autoclip_history,
        "weight_decay": opt.weight_decay,
        "gradient_accumulation": opt.gradient_accumulation,
        "ada_beta_1": opt.ada_beta_1,
        "ada_beta_2": opt.ada_beta_2,
        "ada_amsgrad": opt.ada_amsgrad,
    }
    options["dtype"] = config.model.dtype
    options["autoclip_per_tensor"] = opt.autoclip_per_tensor
    options["freeze_weights"] = config.train.freeze_weights
    options["freeze_layers"] = list(config.train.freeze_layers)
    if config.model.name in LOWMEM_PLUGINS:
        options["lowmem"] = config.model.lowmem
    plugin = getattr(config.model, config.model.name, None)  # the plugin's own options, if any
    if dataclasses.is_dataclass(plugin):
        options.update({k: v for k, v in dataclasses.asdict(plugin).items()
                        if k not in FSJAX_ONLY_OPTIONS})
    return options


def state_path(model_dir: pathlib.Path, name: str) -> pathlib.Path:
    return pathlib.Path(model_dir) / f"{name}_state.json"


def new_state(name: str, config: ExperimentConfig) -> dict[str, Any]:
    """The state of a model that has not trained yet."""
    return {
        "name": name,
        "sessions": {},
        "lowest_avg_loss": None,
        "iterations": 0,
        "mixed_precision_layers": [],
        "lr_finder": -1.0,
        "config": faceswap_options(config),
    }


def load_state(path: pathlib.Path) -> dict[str, Any]:
    """Reads a state file (JSON only; nothing in it is executed)."""
    try:
        state = jsonfile.parse(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"{path}: cannot read the model state file ({err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("iterations"), int):
        raise ModelFolderError(f"{path}: not a Faceswap model state file (no integer 'iterations')")
    return state


def write_state(path: pathlib.Path, state: dict[str, Any]) -> None:
    """Writes the state file so that a crash leaves either the old or the new file, never half."""
    write_text_atomic(path, json.dumps(state, indent=2))


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    """write-temp + fsync + rename (+ fsync of the folder): the old or the new file, never half."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def experiment_json(config: ExperimentConfig) -> str:
    """`config.json`: the whole experiment, for people and tools to read (never loaded back)."""
    return json.dumps(dataclasses.asdict(config), indent=2, default=str)


def record_session(
    state: dict[str, Any],
    session_id: int,
    *,
    batch_size: int,
    session_iterations: int,
    total_iterations: int,
    no_logs: bool,
    config: ExperimentConfig,
    started: float,
) -> None:
    """Updates the session entry and totals in place (only sessions with iterations are kept)."""
    if session_iterations > 0:
        options = faceswap_options(config)
        state["sessions"][str(session_id)] = {
            "timestamp": started,
            "no_logs": no_logs,
            "batchsize": batch_size,
            "iterations": session_iterations,
            "config": {k: options[k] for k in CHANGEABLE + FSJAX_CHANGEABLE if k in options},
        }
        # As Faceswap does, the model's own record of changeable options follows the latest run.
        state["config"].update(state["sessions"][str(session_id)]["config"])
    state["iterations"] = total_iterations


def next_session_id(state: dict[str, Any]) -> int:
    return max((int(k) for k in state["sessions"]), default=0) + 1


def check_locked(stored: dict[str, Any], config: ExperimentConfig, path: pathlib.Path) -> None:
    """Refuses a resume that changes an option locked at creation (models.md §3).

    Faceswap silently keeps the stored value; fsjax stops before training so that the run the
    user asked for is never quietly a different one. Options the stored file lacks (written by an
    older version) are not compared.
    """
    requested = faceswap_options(config)
    changed = [
        (key, stored[key], requested[key]) for key in requested
        if key in stored and key not in CHANGEABLE + FSJAX_CHANGEABLE
        and _normal(stored[key]) != _normal(requested[key])
    ]
    if changed:
        lines = "".join(f"\n  {key}: stored {old!r}, requested {new!r}"
                        for key, old, new in changed)
        raise ModelFolderError(
            f"{path}: these options are locked when a model is created and cannot change on "
            f"resume:{lines}\nUse the stored values, or a new model folder for new ones"
        )


def _normal(value: Any) -> Any:
    """JSON turns tuples into lists and may write 1.0 for 1: compare like with like."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)
