"""fsjax's InceptionResNetV2 encoder against `keras.applications.InceptionResNetV2` (JAX backend,
no weights): the same layers by name and class (parameter-free ones and the `CustomScaleLayer`s
included), the same parameter count, the same inference output with Keras' weights copied in
(biases and betas randomised first) and the same batch normalisation settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import Wrapped, check_against_keras, check_batch_norms  # noqa: E402

from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402
from fsjax.models.encoders import inception_resnet_v2 as module  # noqa: E402
from fsjax.nn import layers  # noqa: E402

ARCH = "inception_resnet_v2"


def _keras(size: int):
    keras.backend.clear_session()  # Keras numbers unnamed layers per session (fresh, as Faceswap)
    return keras.applications.InceptionResNetV2(include_top=False, weights=None,
                                                input_shape=(size, size, 3), pooling=None)


class _Names:
    """Collects (class, name) of the parameter-free layers fsjax reports for graph export."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def layer(self, class_name, config, name, inputs, output) -> None:
        assert name is not None and name not in self.seen, name
        self.seen[name] = class_name


def _check_names(model, forward, size: int, variables) -> None:
    names = _Names()
    with layers.recording(names):
        jax.eval_shape(Wrapped(forward).init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    ours = set(names.seen) | {n for tree in variables.values() for n in tree}
    theirs = {op.name: type(op).__name__ for op in model.operations
              if type(op).__name__ != "InputLayer"}
    assert ours == set(theirs), (sorted(ours - set(theirs))[:10], sorted(set(theirs) - ours)[:10])
    for name, cls in names.seen.items():
        assert cls == theirs[name], (name, cls, theirs[name])


def test_names() -> None:
    assert module.ARCHS == (ARCH,) and family(ARCH) is module
    assert module.keras_model_name(ARCH) == "inception_resnet_v2"
    assert module.weights_file(ARCH) == (
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 75, 75, 3)), "inception_v3")


def test_matches_keras() -> None:
    size = input_size(ARCH, 25, False)
    assert size == ENCODERS[ARCH].min_size == 75
    model = _keras(size)
    rng = np.random.default_rng(1)
    for w in model.trainable_weights:  # zero biases / betas would hide a missing one's use
        if w.name in ("bias", "beta"):
            w.assign(rng.normal(0.0, 0.1, tuple(w.shape)).astype(np.float32))

    def forward(x):
        return module.build(x, ARCH)

    variables = check_against_keras(model, forward, size)
    _check_names(model, forward, size, variables)
    # Training mode adds batch statistics and the moving-statistics update: the same momentum,
    # epsilon and center/scale on all 204 BNs (numbers: test_encoders_mobilenet.py).
    assert check_batch_norms(model, forward, size) == 204
    assert module.keras_model_name(ARCH) == model.name
