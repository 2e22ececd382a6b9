"""fsjax's NASNetMobile / NASNetLarge encoders against `keras.applications` (JAX backend, no
weights): every layer by name (parameter-free ones with their class), the same parameter count,
the same inference output with Keras' weights copied in, and every BN's settings."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_family  # noqa: E402

from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402

CASES = [
    pytest.param("nasnet_mobile", 192, id="nasnet_mobile"),
    pytest.param("nasnet_large", 264, id="nasnet_large", marks=pytest.mark.slow),
]
"""(arch, number of BatchNormalization layers)."""


@pytest.mark.parametrize(("arch", "batch_norms"), CASES)
def test_matches_keras(arch, batch_norms) -> None:
    size = input_size(arch, 7, False)
    assert size == ENCODERS[arch].min_size == 32
    # Training mode: the same momentum (0.9997), epsilon, center and scale on every BN.
    assert check_family(arch, size, naming={"size": size})[1] == batch_norms


def test_names_and_weights_files() -> None:
    module = family("nasnet_mobile")
    assert family("nasnet_large") is module
    assert module.keras_model_name("nasnet_mobile") == "nasnet_mobile"
    assert module.keras_model_name("nasnet_large", size=331) == "nasnet_large"
    # Keras' `get_file` names in ~/.keras/models (not the URL's `NASNet-mobile-no-top.h5`).
    assert module.weights_file("nasnet_mobile") == "nasnet_mobile_no_top.h5"
    assert module.weights_file("nasnet_large") == "nasnet_large_no_top.h5"
    # ImageNet weights need the default size: Phaze-A falls back to it off 100% scaling.
    assert input_size("nasnet_mobile", 50, True) == 224
    assert input_size("nasnet_large", 50, True) == 331
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 32, 32, 3)), "mobilenet")
    with pytest.raises(ValueError):
        module.weights_file("nasnet")
