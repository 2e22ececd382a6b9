"""Where a run's state comes from: a resumed checkpoint, a fresh init, weights of another model.

Also the model folder's state file (`open_model_state`) and the session's learning rate: the
configured or found rate, with Faceswap's per-session linear warmup, as an optax schedule over
the optimizer's step count.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fsjax.checkpoint import state_file
from fsjax.checkpoint.graft import GraftError, GraftReport, graft, leaf_names
from fsjax.checkpoint.manager import Checkpoints, Placement
from fsjax.checkpoint.state_file import ModelFolderError
from fsjax.config import ConfigError, ExperimentConfig
from fsjax.config.faceswap_state import recorded_dtype
from fsjax.nn.precision import Policy
from fsjax.optim.loss_scale import DynamicLossScale
from fsjax.optim.optimizers import current_learning_rate
from fsjax.training.logs import console
from fsjax.training.state import TrainState

Say = Callable[..., None]
"""Prints a console line, `say(line, error=False)`: the run's `Outputs.say` (primary only)."""


def resolve_layers(names: tuple[str, ...], available: list[str], option: str,
                   keras_encoder: str = "", unmatched: str = "",
                   say: Say = console) -> tuple[str, ...]:
    """Sub-model names as this model spells them. `encoder` also names a model's only encoder
    (DFL-SAE's `encoder_df` / `encoder_liae`), as Faceswap's per-plugin defaults do.

    The name `keras_encoder` (Phaze-A's `freeze_layers` default in Faceswap) stands for the
    pretrained network nested in the encoder, whose path the `keras_encoder` argument gives
    (`encoder/efficientnetb0`); a model without one drops it, as Faceswap does. `unmatched` is
    Faceswap's name for it where that matches no sub-model (`faceswap_compat`): nothing is
    frozen for it then, with Faceswap's warning."""
    out = []
    for name in names:
        if name in available:
            out.append(name)
            continue
        if name == "keras_encoder":
            if unmatched:
                say(f"warning: {option}: 'keras_encoder' becomes {unmatched!r}, "
                    "which matches no sub-model (Faceswap's name for it differs in case): "
                    "nothing frozen, as in Faceswap (model.phaze_a.faceswap_compat)")
            elif keras_encoder:
                out.append(keras_encoder)
            continue
        encoders = [k for k in available if k.startswith("encoder")]
        if name == "encoder" and len(encoders) == 1:
            out.append(encoders[0])
            continue
        raise ConfigError(f"{option}: this model has no sub-model {name!r}; it has "
                          f"{', '.join(sorted(available))}")
    return tuple(dict.fromkeys(out))


def restore_or_init(
    checkpoints: Checkpoints, abstract: TrainState, fresh: Callable[[], TrainState],
    sharding: Placement, say: Say = console,
) -> tuple[TrainState, dict[str, Any] | None, GraftReport | None]:
    """The newest save fitted onto this run's state layout (`abstract`: `jax.eval_shape` of its
    init), its iterator state and what was kept; or `fresh()` (no iterator state, no report)
    when the folder has no save. Optimizer arrays the options changed start fresh."""
    if checkpoints.latest_step() is None:
        return fresh(), None, None
    saved, iter_state = checkpoints.restore(sharding)
    if "opt_state" not in saved:
        say(f"The save of iteration {checkpoints.latest_step()} holds no optimizer state "
            "(optimizer.save_optimizer): the optimizer starts afresh, as in Faceswap")
    try:
        state, report = graft(abstract, saved)
        if report.fresh:  # only then are real initial values needed
            state, report = graft(fresh(), saved)
    except GraftError as err:
        raise ModelFolderError(f"{checkpoints.directory}: {err}") from err
    if "opt_state" in saved and (message := report.summary()):
        say(message)
    return state, iter_state, report


def switch_precision(state: TrainState, options: dict[str, Any], config: ExperimentConfig,
                     sharding: Any, source: pathlib.Path, say: Say = console) -> TrainState:
    """A resume that changes `model.dtype`: allowed, as Faceswap allows `mixed_precision` to
    change (parameters are float32 under every policy, so nothing is rewritten). A model
    entering float16 starts the loss scale afresh, as Faceswap's new GradScaler does; one that
    stays in float16 continues its scale."""
    before, now = recorded_dtype(options, source), config.model.dtype
    if before == now:
        return state
    line = f"model.dtype changed from {before} to {now} (Faceswap's mixed_precision: " \
           f"{before == 'float16'} -> {now == 'float16'})"
    if now == "float16":
        rule = DynamicLossScale.configured(config)
        state = state.replace(loss_scale=jax.device_put(rule.init(), sharding))
        line += f"; the loss scale starts at {rule.initial:g}"
    say(line)
    return state


def precision_line(config: ExperimentConfig, state: TrainState) -> str:
    """The console line that names the run's precision policy."""
    policy = Policy.named(config.model.dtype)
    line = f"Precision policy {policy.name}: {policy.describe()}"
    if policy.loss_scaling:
        scale = float(jax.device_get(state.loss_scale.scale))
        line += (f" (scale now {scale:g}, doubles after "
                 f"{config.model.loss_scale_growth_steps} finite steps)")
    return line


def load_pretrained(state: TrainState, config: ExperimentConfig, pretrained: Any,
                    say: Say = console) -> TrainState:
    """A new Phaze-A model with `enc_load_weights` starts its pretrained network (`pretrained`,
    a `BackboneSpec`, None for other models) from the weights file the user has."""
    if pretrained is None or not config.model.phaze_a.enc_load_weights:
        return state
    from fsjax.interop import pretrained as weights
    from fsjax.interop.keras_file import KerasFileError

    path = weights.find_weights(pretrained, config.model.phaze_a.enc_weights_path)
    try:
        variables, count = weights.load(state.variables(), pretrained, path, say)
    except KerasFileError as err:
        raise ConfigError(f"model.phaze_a.enc_load_weights: {err}") from None
    say(f"Loaded the {pretrained.arch} encoder's pretrained weights ({count:,} parameters) "
        f"from {path}")
    return state.replace(params=variables["params"],
                         model_state={k: variables[k] for k in state.model_state})


def load_weights(state: TrainState, folder: pathlib.Path, name: str, layers: tuple[str, ...],
                 sharding: Placement, say: Say = console) -> TrainState:
    """Copies `layers` (sub-models, with their BatchNorm statistics) from the newest save of the
    fsjax model folder `folder`, which must hold the same plugin; every weight is shape-checked
    and the load is reported."""
    folder = pathlib.Path(folder)
    held = [p.name[: -len("_state.json")] for p in folder.glob("*_state.json")]
    if held and name not in held:
        raise ModelFolderError(f"--load-weights {folder}: it holds a '{held[0]}' model; weights "
                               f"can only be loaded from a '{name}' model")
    source = Checkpoints(folder, name, writable=False)
    try:
        if source.latest_step() is None:
            raise ModelFolderError(f"--load-weights {folder}: no saved '{name}' model in it")
        saved, _ = source.restore(sharding)
    finally:
        source.close()
    variables = {"params": dict(state.params),
                 **{k: dict(v) for k, v in state.model_state.items()}}
    loaded = {}
    for collection, tree in variables.items():
        source_tree = saved.get("params" if collection == "params" else "model_state", {})
        if collection != "params":
            source_tree = source_tree.get(collection, {})
        for layer in layers:
            if layer not in tree:
                continue
            if layer not in source_tree:
                raise ModelFolderError(f"--load-weights {folder}: its model has no {layer}")
            ours, theirs = leaf_names(tree[layer]), leaf_names(source_tree[layer])
            for weight, leaf in ours.items():
                other = theirs.get(weight)
                if other is None or tuple(other.shape) != tuple(leaf.shape):
                    found = "missing" if other is None else f"shape {tuple(other.shape)}"
                    raise ModelFolderError(
                        f"--load-weights {folder}: {collection} {layer}.{weight} is {found}; "
                        f"this model needs {tuple(leaf.shape)}")
            extra = sorted(set(theirs) - set(ours))
            if extra:
                raise ModelFolderError(f"--load-weights {folder}: {layer} has weights this "
                                       f"model lacks: {', '.join(extra[:5])}")
            tree[layer] = jax.tree.map(lambda _, new: new, tree[layer], source_tree[layer])
            if collection == "params":
                loaded[layer] = sum(int(np.prod(v.shape)) for v in ours.values())
    for layer in layers:
        say(f"Loaded weights of {layer} ({loaded[layer]:,} parameters) from {folder}")
    params = variables.pop("params")
    return state.replace(params=params, model_state=variables)


def session_schedule(learning_rate: float, warmup: int, start: int) -> Callable[[Any], Any]:
    """The rate for optimizer step `count`: Faceswap's warmup ramps it linearly per session,
    `rate * k / warmup` for the session's k-th step (so the first step uses 0), then `rate`."""
    if warmup <= 0:
        return lambda count: learning_rate
    return lambda count: learning_rate * jnp.minimum(1.0, (count - start) / warmup)


def session_learning_rate(config: ExperimentConfig, state: TrainState,
                          report: GraftReport | None, found: float | None,
                          say: Say = console) -> float:
    """The session's base rate: with `--use-lr-finder` the found one (`found`, from the state
    file); else the configured one, or under `optimizer.faceswap_compat` the rate saved with a
    restored optimizer state (Faceswap's bug: torch restores it with the state)."""
    if config.train.use_lr_finder:
        if found is not None and found > 0:
            say(f"Using the learning rate found by the finder: {found:.1e}")
            return float(found)
        say("warning: --use-lr-finder: this model has no found learning rate (it was created "
            "without the finder); using the configured one", error=True)
    if config.optimizer.faceswap_compat and report is not None and report.kept_optimizer:
        return float(jax.device_get(current_learning_rate(state.opt_state)))
    return config.optimizer.learning_rate


def open_model_state(model_dir: pathlib.Path, name: str, config: ExperimentConfig) -> dict:
    """Loads `<name>_state.json`, or starts a new one; refuses a folder holding another model
    and a resume that changes a locked option."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for other in model_dir.glob("*_state.json"):
        if other.name != f"{name}_state.json":
            raise state_file.ModelFolderError(
                f"{model_dir}: this folder holds a different model ({other.name}); "
                f"use another --model-dir for a new '{name}' model"
            )
    path = state_file.state_path(model_dir, name)
    if not path.exists():
        return state_file.new_state(name, config)
    stored = state_file.load_state(path)
    state_file.check_locked(stored.get("config", {}), config, path)
    return stored
