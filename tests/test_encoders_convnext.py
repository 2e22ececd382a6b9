"""fsjax's ConvNeXt encoders against `keras.applications.ConvNeXt*` (JAX backend, no weights):
the same layers by name (parameter-free ones and the `keras.ops` adds included, the nested stem
and downsampling `Sequential`s flattened), the same parameter count and the same inference output
with Keras' weights, randomised first, copied in."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import Wrapped, check_against_keras, check_batch_norms  # noqa: E402

from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402
from fsjax.models.encoders import convnext as module  # noqa: E402
from fsjax.nn import layers  # noqa: E402

_SLOW = pytest.mark.slow
# convnext_tiny is the default run; the others (27-block third stage, wider) are slow.
CASES = [
    ("convnext_tiny", {}),
    pytest.param("convnext_tiny", {"include_preprocessing": False}, marks=_SLOW),
    pytest.param("convnext_small", {}, marks=_SLOW),
    pytest.param("convnext_base", {}, marks=_SLOW),
    pytest.param("convnext_large", {}, marks=_SLOW),
    pytest.param("convnext_extra_large", {}, marks=_SLOW),
]
_KERAS_CLASS = {"NumpyAdd": "Add"}  # keras.src.ops.numpy.Add is also called `Add`


def _keras(arch: str, size: int, **options):
    keras.backend.clear_session()  # Keras numbers unnamed layers/variables per session
    return getattr(keras.applications, ENCODERS[arch].keras_name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling=None, **options)


def _randomize(model, seed: int = 1) -> None:
    """Non-trivial biases, LayerNorm gammas/betas and LayerScales: at Keras' initial values
    (zeros, ones, 1e-6) a wrong residual branch would hardly show in the output."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        name, shape = w.name, tuple(w.shape)
        if name == "kernel":
            continue
        value = rng.uniform(0.5, 1.5, shape) if name != "bias" and name != "beta" else (
            rng.normal(0.0, 0.1, shape))
        w.assign(value.astype(np.float32))


class _Names:
    """Collects (class, name) of the parameter-free layers fsjax reports for graph export."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def layer(self, class_name, config, name, inputs, output) -> None:
        assert name is not None and name not in self.seen, name
        self.seen[name] = _KERAS_CLASS.get(class_name, class_name)


def _operations(model):
    """Every operation of `model`, nested models replaced by their layers."""
    for op in getattr(model, "operations", None) or model.layers:  # Sequential: layers
        if isinstance(op, keras.Model):
            yield from _operations(op)
        elif type(op).__name__ != "InputLayer":
            yield op


def _check_names(model, forward, size: int, variables) -> None:
    """Every Keras layer / op, with or without weights, has an fsjax twin of the same name; the
    parameter-free ones also of the same class."""
    names = _Names()
    with layers.recording(names):
        jax.eval_shape(Wrapped(forward).init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    ours = set(names.seen) | {n for tree in variables.values() for n in tree}
    theirs = {op.name: type(op).__name__ for op in _operations(model)}
    assert ours == set(theirs), (sorted(ours - set(theirs))[:10], sorted(set(theirs) - ours)[:10])
    for name, cls in names.seen.items():
        assert cls == theirs[name], (name, cls, theirs[name])


@pytest.mark.parametrize(("arch", "options"), CASES)
def test_matches_keras(arch, options) -> None:
    size = input_size(arch, 7, False)
    assert size == ENCODERS[arch].min_size == 32 and family(arch) is module
    model = _keras(arch, size, **options)
    _randomize(model)

    def forward(x):
        return module.build(x, arch, **options)

    variables = check_against_keras(model, forward, size, scale=255.0)
    assert "batch_stats" not in variables  # the prestem Normalization has constant statistics
    _check_names(model, forward, size, variables)
    assert check_batch_norms(model, forward, size) == 0
    assert module.keras_model_name(arch) == model.name


def test_names_and_weights_files() -> None:
    assert set(module.ARCHS) == {a for a, i in ENCODERS.items() if i.family == "convnext"}
    assert module.keras_model_name("convnext_extra_large") == "convnext_xlarge"
    assert module.weights_file("convnext_tiny") == "convnext_tiny_notop.h5"
    assert module.weights_file("convnext_extra_large") == "convnext_xlarge_notop.h5"
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 32, 32, 3)), "convnext_huge")
