"""fsjax's ResNet v1 / v2 encoders against `keras.applications` (JAX backend, no weights): the
same layers by name (parameter-free ones included), the same parameter count, the same inference
output with Keras' weights copied in, and every BatchNormalization's settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_family  # noqa: E402

from fsjax.models.encoders import ENCODERS, family  # noqa: E402
from fsjax.models.encoders import resnet as module  # noqa: E402

_SLOW = pytest.mark.slow
# (arch, number of BatchNormalizations); resnet50 is the default run, v2 and the deeper ones slow.
CASES = [
    ("resnet50", 53),
    pytest.param("resnet50_v2", 49, marks=_SLOW),
    pytest.param("resnet101", 104, marks=_SLOW),
    pytest.param("resnet101_v2", 100, marks=_SLOW),
    pytest.param("resnet152", 155, marks=_SLOW),
    pytest.param("resnet152_v2", 151, marks=_SLOW),
]


@pytest.mark.parametrize(("arch", "batch_norms"), CASES)
def test_matches_keras(arch, batch_norms) -> None:
    size = ENCODERS[arch].min_size
    assert size == 32 and family(arch) is module
    assert check_family(arch, size)[1] == batch_norms


def test_names_and_weights_files() -> None:
    assert set(module.ARCHS) == {a for a, i in ENCODERS.items() if i.family == "resnet"}
    assert module.keras_model_name("resnet152_v2") == "resnet152v2"
    assert module.weights_file("resnet50") == (
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert module.weights_file("resnet50_v2") == (
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert module.weights_file("resnet101") == (
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 32, 32, 3)), "resnet18")
