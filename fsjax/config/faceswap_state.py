"""The fsjax experiment that a model folder's `<name>_state.json` describes.

Faceswap records every option of a model in its state file (data.md §5.2), and fsjax writes the
same schema. Reading it back lets a model imported from Faceswap, or any fsjax folder, resume with
the options it was created with: `python -m fsjax.train --config MODEL_DIR`. The file is JSON
(data only); unknown keys are ignored, Faceswap 2's legacy keys are rewritten as Faceswap does.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from fsjax.config import (
    CENTERINGS,
    CLIPPING,
    DTYPES,
    LOSS_FUNCTIONS,
    LR_FINDER_MODES,
    LR_FINDER_STRENGTHS,
    MASK_TYPES,
    OPTIMIZERS,
    SAVE_OPTIMIZER,
    SECONDARY_LOSS_FUNCTIONS,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    jsonfile,
)
from fsjax.config.plugins import MODEL_PLUGINS, PLUGIN_CHOICES

MAX_STATE_BYTES = 16 * 2**20
_DATA = ("centering", "coverage", "vertical_offset")
_LOSS = ("loss_function", "loss_function_2", "loss_weight_2", "loss_function_3", "loss_weight_3",
         "loss_function_4", "loss_weight_4", "mask_loss_function", "eye_multiplier",
         "mouth_multiplier", "penalized_mask_loss", "mask_type", "mask_dilation",
         "mask_blur_kernel", "mask_threshold", "learn_mask")
_OPTIMIZER = ("optimizer", "learning_rate", "epsilon_exponent", "ada_beta_1", "ada_beta_2",
              "ada_amsgrad", "weight_decay", "save_optimizer", "gradient_clipping",
              "clipping_value", "autoclip_history", "autoclip_per_tensor",
              "gradient_accumulation", "lr_finder_iterations", "lr_finder_mode",
              "lr_finder_strength")
_SECONDARY = ("none",) + LOSS_FUNCTIONS + SECONDARY_LOSS_FUNCTIONS
# Every global option that takes one of a fixed set of values (plugins': PLUGIN_CHOICES).
GLOBAL_CHOICES: dict[str, tuple] = {
    "centering": CENTERINGS, "loss_function": LOSS_FUNCTIONS, "loss_function_2": _SECONDARY,
    "loss_function_3": _SECONDARY, "loss_function_4": _SECONDARY,
    "mask_loss_function": ("mae", "mse"), "mask_type": MASK_TYPES, "optimizer": OPTIMIZERS,
    "save_optimizer": SAVE_OPTIMIZER, "gradient_clipping": CLIPPING,
    "lr_finder_mode": LR_FINDER_MODES, "lr_finder_strength": LR_FINDER_STRENGTHS,
}
# Keys older state files lack get Faceswap's legacy defaults (data.md §5.2).
_LEGACY_DEFAULTS = {"centering": "legacy", "coverage": 62.5, "optimizer": "adam",
                    "mask_loss_function": "mse"}


def read_state(path: pathlib.Path) -> dict[str, Any]:
    """A state file as JSON, refusing anything that is not one."""
    path = pathlib.Path(path)
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is not a state file")
        state = jsonfile.parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the model state file ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("config", {}), dict):
        raise ConfigError(f"{path}: not a Faceswap model state file")
    return state


def upgrade_options(options: dict[str, Any]) -> dict[str, Any]:
    """Faceswap 2's option spellings as Faceswap 3's state-file updater reads them."""
    options = dict(options)
    if "dssim_loss" in options:  # the first loss switch: SSIM, or MAE
        options.setdefault("loss_function", "ssim" if options.pop("dssim_loss") else "mae")
    if "l2_reg_term" in options:  # an L2 term became the second loss function
        options.setdefault("loss_weight_2", options.pop("l2_reg_term"))
        options.setdefault("loss_function_2", "mse")
    if "learn_mask" not in options and "mask_type" in options:
        options["learn_mask"] = not _is_none(options["mask_type"])
    options = {**_LEGACY_DEFAULTS, **options}
    if "gradient_clipping" not in options:
        if options.get("autoclip"):
            options["gradient_clipping"] = "autoclip"
        elif options.get("clipnorm"):
            options["gradient_clipping"] = "norm"
    if options.get("mask_type") in ("facehull", "dfl_full"):  # removed masks: the nearest one
        options["mask_type"] = "components"
    return options


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() == "none")


def read_choices(options: dict[str, Any], plugin: str, source: pathlib.Path) -> dict[str, Any]:
    """Every choice option as one of its values: Faceswap 2 stored "none" as null (Faceswap 3
    reads null, and "none" in any case, as "none"). A value that is not a choice, or a null
    where "none" is not one, is refused naming the file, the option and the value."""
    options = dict(options)
    for key, allowed in {**GLOBAL_CHOICES, **PLUGIN_CHOICES.get(plugin, {})}.items():
        if key not in options:
            continue
        value = options[key]
        if _is_none(value) and "none" in allowed:
            options[key] = "none"
        elif value not in allowed or isinstance(value, bool):
            raise ConfigError(
                f"{source}: option {key!r} holds {json.dumps(value)}, which is not one of its "
                f"values ({', '.join(map(str, allowed))}): the file was not written by a "
                "Faceswap version fsjax knows, or it was edited")
    return options


def experiment_from_state(state: dict[str, Any], plugin: str, source: pathlib.Path,
                          model_dir: pathlib.Path | None = None) -> ExperimentConfig:
    """The experiment whose options are those the state file records.

    The plugin's options are kept even where they lie outside the ranges Faceswap's settings page
    offers: the model was built with them, so rebuilding it needs them. The other sections are
    checked as on the command line."""
    options = read_choices(upgrade_options(state.get("config", {})), plugin, source)
    plugin_config = getattr(ModelConfig(), plugin, None)
    model = dict(name=plugin, dtype=recorded_dtype(options, source),
                 icnr_init=bool(options.get("icnr_init", False)),
                 conv_aware_init=bool(options.get("conv_aware_init", False)),
                 reflect_padding=bool(options.get("reflect_padding", False)),
                 lowmem=bool(options.get("lowmem", False)))
    if dataclasses.is_dataclass(plugin_config):
        for field in dataclasses.fields(plugin_config):
            if field.name in options and options[field.name] is None:
                raise ConfigError(f"{source}: option {field.name!r} holds null, which is not a "
                                  f"value of it (fsjax's default is {field.default!r})")
        model[plugin] = _unchecked(type(plugin_config), options)
    base = ExperimentConfig()
    try:
        train = base.train
        if model_dir is not None:
            train = dataclasses.replace(train, model_dir=pathlib.Path(model_dir))
        return dataclasses.replace(
            base, model=ModelConfig(**model),
            data=_section(DataConfig, base.data, options, _DATA),
            loss=_section(LossConfig, base.loss, options, _LOSS),
            optimizer=_section(OptimizerConfig, base.optimizer, options, _OPTIMIZER),
            train=train)
    except (ConfigError, TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from None


def recorded_dtype(options: dict[str, Any], source: pathlib.Path) -> str:
    """The precision policy: fsjax's `dtype` where the file records one, else Faceswap's
    `mixed_precision` (Keras's mixed_float16 is fsjax's float16) or float32."""
    if "dtype" in options:
        if options["dtype"] not in DTYPES:
            raise ConfigError(f"{source}: option 'dtype' holds {json.dumps(options['dtype'])}, "
                              f"which is not one of {', '.join(DTYPES)}")
        return options["dtype"]
    mixed = options.get("mixed_precision", False)
    if not isinstance(mixed, bool):
        raise ConfigError(f"{source}: option 'mixed_precision' holds {json.dumps(mixed)}, "
                          "which is not true or false")
    return "float16" if mixed else "float32"


def _section(cls: type, default: Any, options: dict[str, Any], keys: tuple[str, ...]) -> Any:
    values = {k: options[k] for k in keys if k in options and options[k] is not None}
    if cls is DataConfig:
        values["coverage"] = float(values.get("coverage", default.coverage))
        values["vertical_offset"] = float(values.get("vertical_offset", 0.0))
    return dataclasses.replace(default, **values)


def _unchecked(cls: type, options: dict[str, Any]) -> Any:
    values = {f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)
    except ConfigError:  # outside the settings page's ranges: build it as Faceswap did
        config = object.__new__(cls)
        for field in dataclasses.fields(cls):
            object.__setattr__(config, field.name, values.get(field.name, field.default))
        return config


def experiment_from_folder(model_dir: pathlib.Path) -> ExperimentConfig:
    """The experiment of the model in `model_dir` (a folder with one `<plugin>_state.json`)."""
    model_dir = pathlib.Path(model_dir)
    found = sorted(p for p in model_dir.glob("*_state.json")
                   if p.name[: -len("_state.json")] in MODEL_PLUGINS)
    if len(found) != 1:
        raise ConfigError(f"--config={str(model_dir)!r}: a model folder must hold one "
                          f"<plugin>_state.json; found {[p.name for p in found] or 'none'}")
    plugin = found[0].name[: -len("_state.json")]
    return experiment_from_state(read_state(found[0]), plugin, found[0], model_dir)
