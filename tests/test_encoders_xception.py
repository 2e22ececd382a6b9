"""fsjax's Xception encoder against `keras.applications.Xception` (JAX backend, no weights): the
same layers by name (Keras' automatic `conv2d_*`, `batch_normalization_*`, `add_*` included),
the same parameter count, the same inference output with Keras' weights copied in, and every
BatchNormalization's settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_family  # noqa: E402

from fsjax.models.encoders import ENCODERS, family  # noqa: E402
from fsjax.models.encoders import xception as module  # noqa: E402

SIZE = 71
CASES = [("xception", 40)]


@pytest.mark.parametrize(("arch", "batch_norms"), CASES)
def test_matches_keras(arch, batch_norms) -> None:
    size = ENCODERS[arch].min_size
    assert size == SIZE and family(arch) is module
    assert check_family(arch, size)[1] == batch_norms


def test_names_and_weights_files() -> None:
    assert module.ARCHS == ("xception",)
    assert module.keras_model_name("xception") == "xception"
    assert module.weights_file("xception") == (
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 71, 71, 3)), "inception_v3")
