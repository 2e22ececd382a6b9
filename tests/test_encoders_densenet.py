"""fsjax's DenseNet121/169/201 encoders against `keras.applications` (JAX backend, no weights):
the same layers by name (parameter-free ones included), the same parameter count, the same
inference output with Keras' weights copied in, and every BatchNormalization's settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_against_keras, check_batch_norms, check_names  # noqa: E402

from fsjax.models.encoders import ENCODERS, family  # noqa: E402
from fsjax.models.encoders import densenet as module  # noqa: E402

SIZE = 32
# (arch, number of BatchNormalizations = the depth); densenet121 is the default run, the rest slow.
CASES = [
    ("densenet121", 121),
    pytest.param("densenet169", 169, marks=pytest.mark.slow),
    pytest.param("densenet201", 201, marks=pytest.mark.slow),
]

def _keras(arch: str, size: int):
    keras.backend.clear_session()  # Keras numbers unnamed layers per session (fresh, as Faceswap)
    return getattr(keras.applications, ENCODERS[arch].keras_name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling=None)




@pytest.mark.parametrize(("arch", "batch_norms"), CASES)
def test_matches_keras(arch, batch_norms) -> None:
    size = ENCODERS[arch].min_size
    assert size == SIZE and family(arch) is module
    model = _keras(arch, size)

    def forward(x):
        return module.build(x, arch)

    variables = check_against_keras(model, forward, size)
    check_names(model, forward, size, variables)
    assert check_batch_norms(model, forward, size) == batch_norms
    assert module.keras_model_name(arch) == model.name

def test_names_and_weights_files() -> None:
    assert set(module.ARCHS) == {a for a, i in ENCODERS.items() if i.family == "densenet"}
    assert module.keras_model_name("densenet201") == "densenet201"
    assert module.weights_file("densenet121") == (
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert module.weights_file("densenet169") == (
        "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 32, 32, 3)), "densenet264")
