"""fsjax's VGG16 / VGG19 encoders against `keras.applications` (JAX backend, no weights): the
same layers by name (parameter-free ones included), the same parameter count and the same
inference output with Keras' weights copied in (on caffe-range inputs). VGG has no
BatchNormalization."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import check_family  # noqa: E402

from fsjax.models.encoders import ENCODERS, family  # noqa: E402
from fsjax.models.encoders import vgg as module  # noqa: E402

# vgg16 is the default run, vgg19 slow.
CASES = ["vgg16", pytest.param("vgg19", marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch", CASES)
def test_matches_keras(arch) -> None:
    size = ENCODERS[arch].min_size
    assert size == 32 and family(arch) is module
    model, batch_norms = check_family(arch, size, scale=255.0)
    assert batch_norms == 0
    # Keras fuses the ReLU into every conv: the exporter needs `activation` on those modules.
    assert {layer.activation.__name__ for layer in model.layers if layer.weights} == {"relu"}


def test_names_and_weights_files() -> None:
    assert set(module.ARCHS) == {a for a, i in ENCODERS.items() if i.family == "vgg"}
    assert module.weights_file("vgg16") == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert module.weights_file("vgg19") == "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert module.ReLUConv2D(8, 3).activation == "relu"
    with pytest.raises(ValueError):
        module.build(jnp.zeros((1, 32, 32, 3)), "vgg11")
