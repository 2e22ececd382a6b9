"""fsjax's DenseNet121/169/201 encoders against `keras.applications` (JAX backend, no weights):
the same layers by name (parameter-free ones included), the same parameter count, the same
inference output with Keras' weights copied in, and every BatchNormalization's settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_family  # noqa: E402

from fsjax.models.encoders import ENCODERS, family  # noqa: E402
from fsjax.models.encoders import densenet as module  # noqa: E402

SIZE = 32
# (arch, number of BatchNormalizations = the depth); densenet121 is the default run, the rest slow.
CASES = [
    ("densenet121", 121),
    pytest.param("densenet169", 169, marks=pytest.mark.slow),
    pytest.param("densenet201", 201, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("arch", "batch_norms"), CASES)
def test_matches_keras(arch, batch_norms) -> None:
    size = ENCODERS[arch].min_size
    assert size == SIZE and family(arch) is module
    assert check_family(arch, size)[1] == batch_norms


def test_names_and_weights_files() -> None:
    assert set(module.ARCHS) == {a for a, i in ENCODERS.items() if i.family == "densenet"}
    assert module.keras_model_name("densenet201") == "densenet201"
    assert module.weights_file("densenet121") == (
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert module.weights_file("densenet169") == (
        "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 32, 32, 3)), "densenet264")
