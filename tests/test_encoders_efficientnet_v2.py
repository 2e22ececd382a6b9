"""fsjax's EfficientNetV2 encoders against `keras.applications.EfficientNetV2*` (JAX backend, no
weights, `include_preprocessing=False` as Faceswap builds them): the same layers by name
(parameter-free ones included), the same parameter count, the same inference output with Keras'
weights copied in, the same batch normalisation settings and model name; plus the per-sample
drop-connect of the residual branches."""

import functools
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import Wrapped, check_against_keras, check_batch_norms, check_names  # noqa: E402

from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402

FAMILY = family("efficientnet_v2_b0")
_SLOW = pytest.mark.slow
CASES = [
    ("efficientnet_v2_b0", False),
    pytest.param("efficientnet_v2_b1", False, marks=_SLOW),
    pytest.param("efficientnet_v2_b2", False, marks=_SLOW),
    pytest.param("efficientnet_v2_b3", False, marks=_SLOW),
    pytest.param("efficientnet_v2_s", False, marks=_SLOW),
    pytest.param("efficientnet_v2_m", False, marks=_SLOW),
    pytest.param("efficientnet_v2_l", False, marks=_SLOW),
    # Keras' own front (Faceswap always turns it off): Rescaling + Normalization / Rescaling.
    pytest.param("efficientnet_v2_b0", True, marks=_SLOW),
    pytest.param("efficientnet_v2_s", True, marks=_SLOW),
]


@functools.cache
def _keras(arch: str, size: int, include_preprocessing: bool):
    """Built once per case (building one costs seconds); `check_against_keras` reassigns its BN
    statistics, the only state it changes."""
    keras.backend.clear_session()  # Keras numbers unnamed layers per session (fresh, as Faceswap)
    return getattr(keras.applications, ENCODERS[arch].keras_name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling=None,
        include_preprocessing=include_preprocessing)


def _tame(model) -> None:
    """Scales the residual branches down (their closing BN's gamma to 0.25) so the comparison
    can hold fsjax to 1e-5. With Keras' random initialisation the residual stream grows block
    by block and amplifies rounding: at 32 px Keras' own float32 output of EfficientNetV2M
    differs from its float64 output by about half the output's magnitude (L worse), as much
    as fsjax's does (checked block by block: both drift alike from 1e-7 at the stem). S and
    the B models, with fewer blocks, are compared untouched."""
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        prefix = layer.name.removesuffix("project_bn")
        if prefix != layer.name and f"{prefix}add" in names:
            layer.gamma.assign(np.full(layer.gamma.shape, 0.25, np.float32))


@pytest.mark.parametrize(("arch", "include_preprocessing"), CASES)
def test_matches_keras(arch, include_preprocessing) -> None:
    size = input_size(arch, 5, False)
    assert size == ENCODERS[arch].min_size == 32
    model = _keras(arch, size, include_preprocessing)
    if arch in ("efficientnet_v2_m", "efficientnet_v2_l"):
        _tame(model)

    def forward(x):
        return FAMILY.build(x, arch, include_preprocessing=include_preprocessing)

    variables = check_against_keras(model, forward, size,
                                    scale=255.0 if include_preprocessing else 1.0)
    check_names(model, forward, size, variables)
    bns = sum(type(op).__name__ == "BatchNormalization" for op in model.operations)
    assert check_batch_norms(model, forward, size) == bns
    assert FAMILY.keras_model_name(arch, size=size) == model.name


@pytest.mark.slow
def test_s_at_preset_size() -> None:
    """EfficientNetV2S at 384 px, as Faceswap's `sym384` preset builds it (enc_scaling 100,
    ImageNet weights): the full-size feature map (12 x 12 x 1280) still matches Keras. At this
    size the random network amplifies rounding too (Keras float32 vs float64: ~1e-2), so the
    residual branches are scaled down as for M and L."""
    arch = "efficientnet_v2_s"
    size = input_size(arch, 100, True)
    assert size == 384
    model = _keras(arch, size, False)
    _tame(model)
    check_against_keras(model, lambda x: FAMILY.build(x, arch), size, batch=1)
    assert FAMILY.keras_model_name(arch, size=size, load_weights=True) == model.name


def test_drop_connect() -> None:
    """Residual branches are dropped per sample while training (a `dropout` stream), kept ones
    scaled by 1/(1 - rate), identity without the stream; every block has Keras' rate."""
    x = jnp.ones((64, 4, 4, 3))
    drop = FAMILY.Dropout(0.25)
    assert jnp.array_equal(drop.apply({}, x), x)
    y = np.asarray(drop.apply({}, x, rngs={"dropout": jax.random.key(0)}))
    per_sample = y.reshape(64, -1)
    assert np.all(per_sample == per_sample[:, :1])  # one decision per sample
    assert set(np.unique(per_sample)) == {0.0, np.float32(1 / 0.75)}
    # The rates Keras gives: 0.2 * block index / block count, none on the first block.
    arch, size = "efficientnet_v2_b0", 32
    rates = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, FAMILY.Dropout):
            rates[context.module.name] = context.module.rate
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(Wrapped(lambda v: FAMILY.build(v, arch)).init, jax.random.key(0),
                       jnp.zeros((1, size, size, 3)))
    model = _keras(arch, size, False)
    theirs = {op.name: op.rate for op in model.operations if type(op).__name__ == "Dropout"}
    assert all(tuple(op.noise_shape) == (None, 1, 1, 1) for op in model.operations
               if type(op).__name__ == "Dropout")
    assert rates.keys() == theirs.keys() and len(rates) == 15
    assert all(np.isclose(rates[k], theirs[k], rtol=1e-7) for k in rates)


def test_names_and_weights_files() -> None:
    assert FAMILY.keras_model_name("efficientnet_v2_s", size=384, load_weights=True) == (
        "efficientnetv2-s")
    assert FAMILY.keras_model_name("efficientnet_v2_b3") == "efficientnetv2-b3"
    assert FAMILY.weights_file("efficientnet_v2_b0") == "efficientnetv2-b0_notop.h5"
    assert FAMILY.weights_file("efficientnet_v2_s", size=256) == "efficientnetv2-s_notop.h5"
    assert FAMILY.weights_file("efficientnet_v2_l") == "efficientnetv2-l_notop.h5"
    assert FAMILY.ARCHS == tuple(a for a in ENCODERS if ENCODERS[a].family == "efficientnet_v2")
    with pytest.raises(ValueError):
        FAMILY.build(jnp.zeros((1, 32, 32, 3)), "efficientnet_b0")
    with pytest.raises(ValueError):
        FAMILY.weights_file("mobilenet")
