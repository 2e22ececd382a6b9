"""Faceswap's saved optimizer state, mapped onto fsjax's optax state where the two agree.

Faceswap 3 stores torch's `optimizer.state_dict()` as `optimizer.pt` inside the `.keras` zip
(data.md §5.1): per parameter `step`, `exp_avg`, `exp_avg_sq` for Adam, numbered by parameter
group — first the weights that take decay (more than one dimension, name not ending "bias"), then
the rest — each group in the order of the Keras model's trainable variables. Faceswap 2's `.h5`
holds tf.keras's `optimizer_weights` (`Adam/iter:0`, `Adam/<layer>/<var>/m:0` and `/v:0`).

Adam (and AdamW, whose moments are the same) maps onto `optax.scale_by_adam`'s `mu`, `nu` and
`count`. Anything else is reported with the reason, and the optimizer starts afresh, as Faceswap
does when a model file holds no optimizer.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsjax.interop.keras_file import KerasFileError, KerasModel, check_dataset, layer_classes
from fsjax.interop.torch_file import TorchFileError, read_object

# The order in which Keras creates a layer's variables, by the names fsjax gives them.
KERAS_ORDER = ("kernel", "depthwise_kernel", "pointwise_kernel", "bias", "gamma", "beta",
               "scale", "offset", "alpha", "moving_mean", "moving_variance", "mean", "variance",
               "count")
NON_TRAINABLE = ("moving_mean", "moving_variance", "mean", "variance", "count")
"""Keras' non-trainable weights: BatchNorm's moving and Normalization's adapted statistics."""
ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq"}
_SLOT = re.compile(r"(?:[^/]+/)?(?P<layer>.+)/(?P<var>[^/]+)/(?P<slot>m|v|vhat):0")
_SLOT_NEW = re.compile(r"[^/]+/(?P<slot>m|v)/(?P<layer>.+)/(?P<var>[^/]+):0")


class OptimizerImportError(ValueError):
    """The saved optimizer does not map onto fsjax's; the message says why."""


@dataclasses.dataclass
class AdamMoments:
    """Adam's state in fsjax's parameter layout (`params`-shaped trees of arrays)."""

    step: int
    mu: dict[str, Any]
    nu: dict[str, Any]
    loss_scale: tuple[float, int] | None = None
    """Faceswap 3's mixed-precision GradScaler: (scale, finite steps since it last grew)."""


def keras_order(names: Any) -> list[str]:
    """A layer's variable names in Keras's creation order."""
    unknown = [n for n in names if n not in KERAS_ORDER]
    if len(unknown) == 1 and len(list(names)) == 1:  # a one-table layer (CLIP's, LayerScale)
        return list(names)
    if unknown:
        raise OptimizerImportError(f"variables {unknown} have no known Keras order")
    return sorted(names, key=KERAS_ORDER.index)


def trainable_variables(keras: KerasModel, params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """`(sub-model, layer, variable)` in the order of the Keras model's `trainable_variables`:
    layers in config order (nested models depth first), each layer's variables in creation
    order; frozen layers and BatchNorm statistics left out."""
    out = []
    for sub, layer, _, trainable in layer_classes(keras.config):
        if not trainable or layer not in params.get(sub, {}):
            continue
        out.extend((sub, layer, name) for name in keras_order(params[sub][layer])
                   if name not in NON_TRAINABLE)
    return out


def from_torch(blob: bytes, keras: KerasModel, params: dict[str, Any]) -> AdamMoments:
    """Adam's moments from Faceswap 3's `optimizer.pt` (read without torch, nothing run)."""
    try:
        saved = read_object(blob, f"{keras.path}:optimizer.pt")
    except TorchFileError as err:
        raise OptimizerImportError(str(err)) from None
    try:
        state = saved["optimizer"]["state"]
        groups = saved["optimizer"]["param_groups"]
    except (KeyError, TypeError):
        raise OptimizerImportError("optimizer.pt is not a Faceswap optimizer state") from None
    if not state:
        raise OptimizerImportError("optimizer.pt holds no per-parameter state")
    keys = set().union(*(set(v) for v in state.values()))
    if keys != ADAM_KEYS:
        raise OptimizerImportError(f"its per-parameter state holds {sorted(keys)}, not Adam's "
                                   f"{sorted(ADAM_KEYS)}")
    order = trainable_variables(keras, params)
    decay = [v for v in order if len(params[v[0]][v[1]][v[2]].shape) > 1 and v[2] != "bias"]
    rest = [v for v in order if v not in decay]
    members = [list(g.get("params", [])) for g in groups]
    if [len(m) for m in members] != [len(decay), len(rest)]:
        raise OptimizerImportError(
            f"its parameter groups hold {[len(m) for m in members]} parameters; this model has "
            f"{len(decay)} decayed and {len(rest)} other trainable weights")
    mu: dict[str, Any] = {}
    nu: dict[str, Any] = {}
    steps = set()
    for variables, ids in zip((decay, rest), members, strict=True):
        for (sub, layer, name), pid in zip(variables, ids, strict=True):
            entry = state.get(pid)
            if entry is None:
                raise OptimizerImportError(f"no state for parameter {pid} ({sub}/{layer}/{name})")
            _place(mu, nu, params, (sub, layer, name), entry["exp_avg"], entry["exp_avg_sq"])
            steps.add(int(np.asarray(entry["step"]).item()))
    if len(steps) != 1:
        raise OptimizerImportError(f"its parameters were stepped unequally ({sorted(steps)})")
    return AdamMoments(steps.pop(), mu, nu, _scaler(saved.get("scaler")))


def _scaler(scaler: Any) -> tuple[float, int] | None:
    """torch's GradScaler state (`scale`, `_growth_tracker`), when it holds usable numbers."""
    if not isinstance(scaler, dict):
        return None
    scale, tracker = scaler.get("scale"), scaler.get("_growth_tracker", 0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            np.isfinite(scale) and scale > 0) or isinstance(tracker, bool) or not isinstance(
            tracker, int) or tracker < 0:
        return None
    return float(scale), int(tracker)


def from_keras2(keras: KerasModel, params: dict[str, Any]) -> AdamMoments:
    """Adam's moments from a Faceswap 2 `.h5`'s `optimizer_weights`. Each moment's dataset is
    checked as the model's weights are, and its shape compared with its weight's, before it is
    read."""
    owner = {layer: sub for sub, layers in params.items() for layer in layers}
    slots: dict[str, dict[tuple[str, str], h5py.Dataset]] = {"m": {}, "v": {}}
    step = None
    mu: dict[str, Any] = {}
    nu: dict[str, Any] = {}
    with h5py.File(keras.path, "r") as root:
        group = root["optimizer_weights"]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        for name in names:
            node = group.get(name)
            try:
                check_dataset(keras.path, f"optimizer_weights/{name}", node)
            except KerasFileError as err:
                raise OptimizerImportError(str(err)) from None
            if name.endswith("iter:0") or name.endswith("iteration:0"):
                if node.size != 1:
                    raise OptimizerImportError(f"its step {name} has shape {node.shape}")
                step = int(np.asarray(node[()]).item())
                continue
            match = _SLOT_NEW.fullmatch(name) or _SLOT.fullmatch(name)
            if match is None:
                continue  # hyper-parameters (learning_rate, beta_1...) are fsjax's own options
            if match["slot"] == "vhat":
                raise OptimizerImportError("it is AMSGrad (vhat), which fsjax's Adam lacks")
            slots[match["slot"]][(match["layer"], match["var"])] = node
        if step is None or not slots["m"]:
            raise OptimizerImportError("its optimizer_weights hold no Adam moments")
        for (layer, var), m in slots["m"].items():
            if layer not in owner or (layer, var) not in slots["v"]:
                raise OptimizerImportError(
                    f"its moment {layer}/{var} matches no weight of the model")
            _place(mu, nu, params, (owner[layer], layer, var), m, slots["v"][(layer, var)])
    return AdamMoments(step, mu, nu)


def _place(mu: dict, nu: dict, params: dict, where: tuple[str, str, str], m: Any, v: Any) -> None:
    """Both moments of one weight, their shapes checked before either is read."""
    sub, layer, name = where
    target = params[sub][layer].get(name)
    for array in (m, v):
        if target is None or tuple(np.shape(array)) != tuple(target.shape):
            raise OptimizerImportError(
                f"its moment for {sub}/{layer}/{name} has shape {tuple(np.shape(array))}; the "
                f"weight is {None if target is None else tuple(target.shape)}")
    mu.setdefault(sub, {}).setdefault(layer, {})[name] = np.asarray(m, np.float32)
    nu.setdefault(sub, {}).setdefault(layer, {})[name] = np.asarray(v, np.float32)


def with_adam(opt_state: Any, moments: AdamMoments) -> Any:
    """`opt_state` (from `make_optimizer(...).init`) holding the imported moments and step.
    Every moment of the state must be given; an optimizer without Adam's state is refused."""
    found = []

    def fill(old: Any, new: Any, where: str) -> Any:
        leaves = jax.tree_util.tree_leaves_with_path(old)
        given = dict(jax.tree_util.tree_leaves_with_path(new))
        if set(given) != {p for p, _ in leaves}:
            missing = sorted(jax.tree_util.keystr(p) for p, _ in leaves if p not in given)
            raise OptimizerImportError(f"the saved {where} lacks {missing[:5] or 'nothing'}, "
                                       "or holds weights the model lacks")
        return jax.tree.map(lambda o, n: jnp.asarray(n, o.dtype), old, new)

    def swap(node: Any) -> Any:
        if isinstance(node, optax.ScaleByAdamState):
            found.append(node)
            count = jnp.asarray(moments.step, node.count.dtype)
            return node._replace(count=count, mu=fill(node.mu, moments.mu, "first moment"),
                                 nu=fill(node.nu, moments.nu, "second moment"))
        if isinstance(node, optax.InjectStatefulHyperparamsState):
            return node._replace(count=jnp.asarray(moments.step, node.count.dtype),
                                 inner_state=jax.tree.map(swap, node.inner_state, is_leaf=_is))
        return node

    out = jax.tree.map(swap, opt_state, is_leaf=_is)
    if len(found) != 1:
        raise OptimizerImportError("this model's optimizer is not Adam")
    return out


def _is(node: Any) -> bool:
    return isinstance(node, (optax.ScaleByAdamState, optax.InjectStatefulHyperparamsState))
