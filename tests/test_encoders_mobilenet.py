"""fsjax's MobileNet v1 / v2 / v3 encoders against `keras.applications` (JAX backend, no
weights): the same layers by name (parameter-free ones included), the same parameter count, the
same inference output with Keras' weights copied in, and for v2 the same batch-statistics
forward and moving-statistics update."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import Wrapped, check_against_keras, check_batch_norms, check_names  # noqa: E402

from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402

# Faceswap's option names -> Keras' keyword (v1: width, depth, dropout; v3: width, minimalistic).
_SLOW = pytest.mark.slow  # the default run covers v1, v3 and (in the training test) v2
CASES = [
    ("mobilenet", {"alpha": 0.75, "depth_multiplier": 2}),
    pytest.param("mobilenet", {}, marks=_SLOW),
    pytest.param("mobilenet_v2", {}, marks=_SLOW),
    pytest.param("mobilenet_v2", {"alpha": 1.3}, marks=_SLOW),
    pytest.param("mobilenet_v3_large", {}, marks=_SLOW),
    pytest.param("mobilenet_v3_large", {"minimalistic": True}, marks=_SLOW),
    ("mobilenet_v3_small", {}),
    pytest.param("mobilenet_v3_small", {"alpha": 0.75}, marks=_SLOW),
]


def _keras(arch: str, size: int, **options):
    keras.backend.clear_session()  # Keras numbers unnamed layers per session (fresh, as Faceswap)
    kwargs = dict(options)
    if arch.startswith("mobilenet_v3"):
        kwargs.setdefault("include_preprocessing", False)
    return getattr(keras.applications, ENCODERS[arch].keras_name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling=None, **kwargs)


@pytest.mark.parametrize(("arch", "options"), CASES)
def test_matches_keras(arch, options) -> None:
    size = input_size(arch, 7, False)
    assert size == 32
    model = _keras(arch, size, **options)
    module = family(arch)

    def forward(x):
        return module.build(x, arch, **options)

    variables = check_against_keras(model, forward, size)
    check_names(model, forward, size, variables)
    assert check_batch_norms(model, forward, size) > 0
    assert module.keras_model_name(arch, size=size, **options) == model.name


def test_v3_with_preprocessing() -> None:
    """Keras' own `Rescaling` front (Faceswap's kwargs lookup for v3 misses, so Keras' default
    `include_preprocessing=True` is what Faceswap actually builds)."""
    arch, size = "mobilenet_v3_small", 32
    model = _keras(arch, size, include_preprocessing=True)
    module = family(arch)

    def forward(x):
        return module.build(x, arch, include_preprocessing=True)

    variables = check_against_keras(model, forward, size, scale=255.0)
    check_names(model, forward, size, variables)


def _close(got, expected, tol: float = 1e-5) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    bound = tol * max(1.0, float(np.max(np.abs(expected))))
    worst = float(np.max(np.abs(got - expected)))
    assert worst <= bound, f"largest difference {worst:.3g} > {bound:.3g}"


def test_training_mode_matches_keras() -> None:
    """Batch statistics in the forward and Keras' moving-statistics update (momentum 0.999).

    52 layers normalised on batch statistics amplify float32 rounding: the two forwards differ
    by 1.5e-5 to 2.1e-5 of the largest output here (measured at 64 and 128 px, batch 8 and 16;
    inference differs by under 1e-6), so this comparison is held to 1e-4, five times that. A wrong
    momentum, epsilon or statistic is off by far more."""
    arch, size = "mobilenet_v2", 64
    model = _keras(arch, size)
    module = family(arch)
    variables = check_against_keras(model, lambda x: module.build(x, arch), size)
    x = np.random.default_rng(1).uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    wrapped = Wrapped(lambda v: module.build(v, arch))
    got, updated = jax.jit(lambda v, x: wrapped.apply(v, x, mutable=["batch_stats"]))(
        variables, jnp.asarray(x))
    _close(got, model(x, training=True), tol=1e-4)
    stats = updated["batch_stats"]
    checked = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            _close(stats[layer.name]["moving_mean"], layer.moving_mean.numpy(), tol=1e-4)
            _close(stats[layer.name]["moving_variance"], layer.moving_variance.numpy(), tol=1e-4)
            checked += 1
    assert checked == 52


def test_names_and_weights_files() -> None:
    v1, v2, v3 = family("mobilenet"), family("mobilenet_v2"), family("mobilenet_v3_large")
    # The model names Keras gives (freeze_layers); ImageNet weights fall back to 224 rows.
    assert v1.keras_model_name("mobilenet", size=64) == "mobilenet_1.00_64"
    assert v1.keras_model_name("mobilenet", size=64, load_weights=True) == "mobilenet_1.00_224"
    assert v1.keras_model_name("mobilenet", size=160, alpha=0.5) == "mobilenet_0.50_160"
    assert v2.keras_model_name("mobilenet_v2", size=96, load_weights=True) == (
        "mobilenetv2_1.00_96")
    assert v3.keras_model_name("mobilenet_v3_small", alpha=0.75) == "MobileNetV3Small"
    # Keras' download names in ~/.keras/models.
    assert v1.weights_file("mobilenet", size=64) == "mobilenet_1_0_224_tf_no_top.h5"
    assert v1.weights_file("mobilenet", size=128, alpha=0.25) == "mobilenet_2_5_128_tf_no_top.h5"
    assert v2.weights_file("mobilenet_v2", size=160, alpha=0.35) == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_160_no_top.h5")
    assert v2.weights_file("mobilenet_v2") == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    assert v3.weights_file("mobilenet_v3_large") == (
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5")
    assert v3.weights_file("mobilenet_v3_small", alpha=0.75) == (
        "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5")
    assert v3.weights_file("mobilenet_v3_small", minimalistic=True) == (
        "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5")
    for module, other in ((v1, "mobilenet_v2"), (v2, "mobilenet"), (v3, "nasnet_mobile")):
        with pytest.raises(ValueError):
            module.build(jnp.zeros((1, 32, 32, 3)), other)
