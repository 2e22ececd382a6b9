"""Checking an fsjax encoder family against the Keras model it copies (`keras.applications` with
`weights=None` on the JAX backend, or another Keras model).

`check_against_keras(keras_model, forward, size)` builds the fsjax encoder inside a one-layer
wrapper module, asserts that both have the same layers by name and the same parameter count,
copies every Keras weight into the fsjax variables by layer name and weight name, and compares
both forwards (inference mode: BatchNorm on its moving statistics) on a random batch: the largest
difference may be at most `tol` times the largest output magnitude (or `tol` when that is below
1), so deep networks whose features run into the hundreds are held to float32's relative
precision.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

STATS = ("moving_mean", "moving_variance", "mean", "variance", "count")
"""Keras weight names that fsjax keeps in `batch_stats` rather than `params`."""


class Wrapped(nn.Module):
    """Runs `forward(x)` in this module's scope, so its layers are this module's children (as
    they are the `encoder` sub-model's in Phaze-A)."""

    forward: Callable[[jax.Array], jax.Array]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)


def keras_weights(model: Any) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name: array}} over every layer of `model`, nested models flattened."""
    out: dict[str, dict[str, np.ndarray]] = {}

    def visit(m: Any) -> None:
        for layer in m.layers:
            if hasattr(layer, "layers") and layer.layers:  # a nested model
                visit(layer)
                continue
            if layer.weights:
                assert layer.name not in out, f"layer name {layer.name} twice"
                out[layer.name] = {w.name.split("/")[-1]: np.asarray(w.numpy())
                                   for w in layer.weights}
    visit(model)
    return out


def fsjax_variables(weights: dict[str, dict[str, np.ndarray]], abstract: dict[str, Any]
                    ) -> dict[str, Any]:
    """The Keras weights placed into fsjax's variable tree, checking names and shapes."""
    flat: dict[tuple[str, str], Any] = {}
    for collection, tree in abstract.items():
        for layer, leaves in tree.items():
            for name, leaf in leaves.items():
                flat[(layer, name)] = (collection, leaf)
    keras_keys = {(layer, name) for layer, ws in weights.items() for name in ws}
    assert keras_keys == set(flat), (
        f"only in Keras: {sorted(keras_keys - set(flat))[:20]}; "
        f"only in fsjax: {sorted(set(flat) - keras_keys)[:20]}")
    out: dict[str, Any] = {c: {} for c in abstract}
    for (layer, name), (collection, leaf) in flat.items():
        array = weights[layer][name]
        assert array.shape == tuple(leaf.shape), (layer, name, array.shape, leaf.shape)
        assert (collection == "batch_stats") == (name in STATS), (layer, name, collection)
        out[collection].setdefault(layer, {})[name] = jnp.asarray(array, leaf.dtype)
    return out


def param_count(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def check_against_keras(keras_model: Any, forward: Callable[[jax.Array], jax.Array],
                        size: int, *, batch: int = 2, tol: float = 1e-5, seed: int = 0,
                        scale: float = 1.0, randomize: bool = True) -> dict[str, Any]:
    """Asserts fsjax's `forward` equals `keras_model` (same layers, count, outputs within `tol`).

    `randomize` first gives Keras's BatchNorm statistics random values (they start at 0 / 1,
    which would hide a swapped mean and variance). Inputs are uniform in [0, scale)."""
    rng = np.random.default_rng(seed)
    if randomize:
        for layer_weights in _stat_variables(keras_model):
            for w in layer_weights:
                shape = tuple(w.shape)
                value = (rng.uniform(0.5, 1.5, shape) if "variance" in w.name
                         else rng.normal(0, 0.1, shape))
                w.assign(value.astype(np.float32))
    x = (rng.uniform(0, scale, (batch, size, size, 3))).astype(np.float32)
    module = Wrapped(forward)
    abstract = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    abstract = jax.tree_util.tree_map(lambda a: a, dict(abstract))
    weights = keras_weights(keras_model)
    variables = fsjax_variables(weights, abstract)
    assert param_count(variables) == keras_model.count_params(), (
        param_count(variables), keras_model.count_params())
    expected = np.asarray(keras_model(x, training=False))
    got = np.asarray(jax.jit(module.apply)(variables, jnp.asarray(x)))
    assert got.shape == expected.shape, (got.shape, expected.shape)
    worst = float(np.max(np.abs(got - expected)))
    bound = tol * max(1.0, float(np.max(np.abs(expected))))
    assert worst <= bound, f"largest difference {worst:.3g} > {bound:.3g}"
    return variables


def _stat_variables(model: Any):
    for w in model.non_trainable_weights:
        if w.name.split("/")[-1] in ("moving_mean", "moving_variance"):
            yield [w]


def check_batch_norms(keras_model: Any, forward: Callable[[jax.Array], jax.Array],
                      size: int) -> int:
    """Asserts every fsjax BatchNormalization has its Keras twin's momentum, epsilon, center and
    scale; returns how many there are.

    This is what training mode adds over inference (batch statistics, moving-statistics update
    with that momentum). A whole deep network in training mode cannot be compared numerically at
    float32: dozens of layers normalised over a few samples amplify rounding far past 1e-5, so
    the numbers are checked on a short network (`test_encoders_mobilenet.py`) and this check
    covers each family's settings."""
    from fsjax.nn.normalization import BatchNormalization

    ours: dict[str, tuple[float, float, bool, bool]] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, BatchNormalization) and context.method_name == "__call__":
            ours[module.name] = (module.momentum, module.epsilon, module.center, module.scale)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(Wrapped(forward).init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    theirs: dict[str, tuple[float, float, bool, bool]] = {}

    def visit(m: Any) -> None:
        for layer in m.layers:
            if hasattr(layer, "layers") and layer.layers:
                visit(layer)
            elif type(layer).__name__ == "BatchNormalization":
                theirs[layer.name] = (layer.momentum, layer.epsilon, layer.center, layer.scale)
    visit(keras_model)
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs))[:10])
    for name, settings in theirs.items():
        assert np.allclose(ours[name][:2], settings[:2], rtol=1e-6, atol=0), (name, ours[name],
                                                                              settings)
        assert ours[name][2:] == settings[2:], (name, ours[name], settings)
    return len(ours)


class _Names:
    """Collects (class, name) of the parameter-free layers fsjax reports for graph export."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def layer(self, class_name, config, name, inputs, output) -> None:
        assert name is not None and name not in self.seen, name
        self.seen[name] = _KERAS_CLASS.get(class_name, class_name)


_KERAS_CLASS = {"NumpyAdd": "Add", "NumpyMultiply": "Multiply"}
"""fsjax's records of `keras.ops` arithmetic on tensors, by the class Keras gives them."""


def check_names(model: Any, forward: Callable[[jax.Array], jax.Array], size: int,
                variables: dict[str, Any]) -> None:
    """Every Keras layer and operation, with or without weights, has an fsjax twin of the same
    name; the parameter-free ones also of the same class."""
    from fsjax.nn import layers

    names = _Names()
    with layers.recording(names):
        jax.eval_shape(Wrapped(forward).init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    ours = set(names.seen) | {n for tree in variables.values() for n in tree}
    theirs = {op.name: type(op).__name__ for op in model.operations
              if type(op).__name__ != "InputLayer"}
    assert ours == set(theirs), (sorted(ours - set(theirs))[:10], sorted(set(theirs) - ours)[:10])
    for name, cls in names.seen.items():
        assert cls == theirs[name], (name, cls, theirs[name])


def keras_application(arch: str, size: int, **options: Any) -> Any:
    """`keras.applications`' model for Phaze-A's `arch` (no top, no weights), built first in a
    fresh session as Faceswap builds it (Keras numbers unnamed layers per session)."""
    import keras

    from fsjax.models.encoders import ENCODERS

    keras.backend.clear_session()
    return getattr(keras.applications, ENCODERS[arch].keras_name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling=None, **options)


def check_family(arch: str, size: int, *, scale: float = 1.0,
                 naming: dict[str, Any] | None = None) -> tuple[Any, int]:
    """The whole check of one architecture against Keras: outputs, names (and classes), the
    model's name (`naming`: `keras_model_name`'s options) and the BN settings; returns the
    Keras model and the BN count."""
    from fsjax.models.encoders import family

    model = keras_application(arch, size)
    module = family(arch)

    def forward(x):
        return module.build(x, arch)

    variables = check_against_keras(model, forward, size, scale=scale)
    check_names(model, forward, size, variables)
    assert module.keras_model_name(arch, **(naming or {})) == model.name
    return model, check_batch_norms(model, forward, size)
