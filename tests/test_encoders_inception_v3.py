"""fsjax's InceptionV3 encoder against `keras.applications.InceptionV3` (JAX backend, no
weights): the same layer names and parameter count, the same inference output with Keras'
weights copied in, and the same batch normalisation settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_against_keras, check_batch_norms  # noqa: E402

from fsjax.models.encoders import ENCODERS, input_size  # noqa: E402
from fsjax.models.encoders import inception_v3 as family  # noqa: E402

ARCH = "inception_v3"


def _keras(size: int):
    keras.backend.clear_session()  # Keras numbers unnamed layers per session (fresh, as Faceswap)
    return keras.applications.InceptionV3(include_top=False, weights=None,
                                          input_shape=(size, size, 3), pooling=None)


def test_names() -> None:
    assert family.keras_model_name(ARCH) == _keras(75).name
    assert family.weights_file(ARCH) == (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with pytest.raises(ValueError):
        family.build(jnp.zeros((1, 75, 75, 3)), "xception")


def test_inference_and_batch_norms_match_keras() -> None:
    size = input_size(ARCH, 25, False)
    assert size == ENCODERS[ARCH].min_size == 75
    model = _keras(size)
    check_against_keras(model, lambda x: family.build(x, ARCH), size)

    # Training mode adds batch statistics and the moving-statistics update: the same momentum,
    # epsilon and center/scale on all 94 BNs (numbers: test_encoders_mobilenet.py).
    assert check_batch_norms(model, lambda x: family.build(x, ARCH), size) == 94
