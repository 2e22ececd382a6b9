"""fsjax's EfficientNet B0..B7 encoders against `keras.applications` (JAX backend, no weights):
the same layers by name and class (parameter-free ones included), the same parameter count, the
same inference output with Keras' weights (and random Normalization statistics) copied in, the
same batch normalisation settings and initializers; the 112 px B0 against Faceswap's manifest;
the `weights="imagenet"` front (`rescaling_1`) against Keras built with the download stubbed out;
and the drop-connect Dropout's per-sample behaviour."""

import json
import math
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras_encoders import Wrapped, check_against_keras, check_batch_norms  # noqa: E402

import fsjax.nn.initializers as inits  # noqa: E402
from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402
from fsjax.models.encoders import efficientnet as eff  # noqa: E402
from fsjax.nn import layers  # noqa: E402

ARCHS = [pytest.param(a, marks=() if a == "efficientnet_b0" else pytest.mark.slow)
         for a in eff.ARCHS]


def _keras(arch: str, size: int, imagenet: bool = False, monkeypatch=None):
    """Keras' model after a fresh session. With `imagenet` Keras builds its `weights="imagenet"`
    graph; the download and the loading are stubbed (no network), so the weights stay random."""
    keras.backend.clear_session()  # Keras numbers unnamed layers per session (fresh, as Faceswap)
    weights = None
    if imagenet:
        from keras.src.models import Functional
        from keras.src.utils import file_utils

        monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: "stubbed.h5")
        monkeypatch.setattr(Functional, "load_weights", lambda self, *a, **k: None, raising=False)
        weights = "imagenet"
    return getattr(keras.applications, ENCODERS[arch].keras_name)(
        include_top=False, weights=weights, input_shape=(size, size, 3), pooling=None)


def _randomize_normalization(model, seed: int = 3) -> None:
    """Unadapted, Keras' Normalization is the identity; random statistics exercise it."""
    rng = np.random.default_rng(seed)
    layer = model.get_layer("normalization")
    layer.adapt_mean.assign(rng.uniform(0.3, 0.6, 3).astype(np.float32))
    layer.adapt_variance.assign(rng.uniform(0.04, 0.09, 3).astype(np.float32))
    layer.finalize_state()  # Keras' call reads `mean` / `variance` computed from the weights


class _Recorder:
    """Every layer of one abstract build in call order: the parameter-free ones fsjax reports
    for graph export (class, config, output shape) and the layer modules (intercepted)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.seen: dict[str, tuple[str, dict, tuple]] = {}
        self.modules: dict[str, tuple[nn.Module, tuple]] = {}

    def layer(self, class_name, config, name, inputs, output) -> None:
        assert name is not None and name not in self.seen, name
        self.seen[name] = (class_name, config, tuple(output.shape))
        self.order.append(name)

    def intercept(self, next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name == "__call__" and isinstance(m.parent, Wrapped):
            assert m.name not in self.modules, m.name
            self.modules[m.name] = (m, tuple(out.shape))
            if m.name not in self.seen:  # the drop-connect Dropout reports itself too
                self.order.append(m.name)
        return out


def _trace(forward, size: int):
    """(recorder, abstract variables) of one build of `forward` at `size`."""
    recorder = _Recorder()
    with layers.recording(recorder), nn.intercept_methods(recorder.intercept):
        variables = jax.eval_shape(Wrapped(forward).init, jax.random.key(0),
                                   jnp.zeros((1, size, size, 3)))
    return recorder, variables


def _check_structure(model, forward, size: int) -> None:
    """Every Keras layer has an fsjax twin of the same name and class, the parameter-free ones
    with Keras' config where it matters (drop-connect rates, paddings, rescaling)."""
    rec, _ = _trace(forward, size)
    recorded, modules, order = rec.seen, rec.modules, rec.order
    theirs = {op.name: op for op in model.operations if type(op).__name__ != "InputLayer"}
    assert set(order) == set(theirs), (sorted(set(order) - set(theirs))[:10],
                                       sorted(set(theirs) - set(order))[:10])
    assert order == [op.name for op in model.operations if type(op).__name__ != "InputLayer"]
    for name, op in theirs.items():
        cls = type(op).__name__
        if name in recorded:
            assert recorded[name][0] == cls, (name, recorded[name][0], cls)
        else:
            assert type(modules[name][0]).__name__ == cls, (name, modules[name][0], cls)
        config = recorded.get(name, (None, {}))[1]
        if cls == "Dropout":
            assert math.isclose(config["rate"], op.rate, rel_tol=1e-12), name
            assert list(config["noise_shape"]) == list(op.noise_shape), name
        if cls == "ZeroPadding2D":
            assert config["padding"] == [list(p) for p in op.padding], name
        if cls == "Rescaling":
            assert np.allclose(config["scale"], op.scale, rtol=1e-7) and config["offset"] == 0
        if cls in ("Conv2D", "DepthwiseConv2D"):
            init = op.kernel_initializer if cls == "Conv2D" else op.depthwise_initializer
            assert (type(init).__name__, init.scale, init.mode, init.distribution) == (
                "VarianceScaling", 2.0, "fan_out", "truncated_normal"), name
            assert modules[name][0].kernel_init is inits.efficientnet_conv_init, name


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_keras(arch) -> None:
    size = input_size(arch, 1, False)
    assert size == ENCODERS[arch].min_size == 32
    model = _keras(arch, size)
    _randomize_normalization(model)
    module = family(arch)

    def forward(x):
        return module.build(x, arch)

    check_against_keras(model, forward, size, scale=255.0)
    _check_structure(model, forward, size)
    assert check_batch_norms(model, forward, size) == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert module.keras_model_name(arch, size=size) == model.name


def test_imagenet_front_matches_keras(monkeypatch) -> None:
    """`imagenet=True`: Keras' extra Rescaling by 1/sqrt(stddev) after the Normalization, named
    `rescaling_1` in a fresh session, with the same output."""
    arch, size = "efficientnet_b0", 32
    model = _keras(arch, size, imagenet=True, monkeypatch=monkeypatch)
    _randomize_normalization(model)

    def forward(x):
        return eff.build(x, arch, imagenet=True)

    check_against_keras(model, forward, size, scale=255.0)
    _check_structure(model, forward, size)
    rec, _ = _trace(forward, size)
    recorded, order = rec.seen, rec.order
    assert order[:4] == ["rescaling", "normalization", "rescaling_1", "stem_conv_pad"]
    cls, config, _ = recorded["rescaling_1"]
    assert cls == "Rescaling" and config["offset"] == 0.0
    assert np.allclose(config["scale"], [1 / math.sqrt(s) for s in (0.229, 0.224, 0.225)],
                       rtol=1e-12, atol=0)


def test_faceswap_manifest(faceswap_dir) -> None:
    """Faceswap's Phaze-A `efficientnet_b0` at 112 px (weights=None): the nested `efficientnetb0`
    model's layers in order, each with its class, weights, parameter count and output shape."""
    manifest = json.loads((faceswap_dir / "models_manifest.json").read_text())
    entry = manifest["variants"]["phaze_a_efficientnet_b0"]
    assert input_size("efficientnet_b0", entry["applied_config"][
        "model.phaze_a.enc_scaling"], False) == 112
    sub = next(s for s in entry["sub_models"] if s["name"] == "efficientnetb0")
    assert sub["params"] == 4_049_571
    assert eff.keras_model_name("efficientnet_b0") == sub["name"]
    rec, variables = _trace(lambda x: eff.build(x, "efficientnet_b0"), 112)
    recorded, modules, order = rec.seen, rec.modules, rec.order
    theirs = [layer for layer in sub["layers"] if layer["class_name"] != "InputLayer"]
    assert order == [layer["name"] for layer in theirs]
    leaves = {}
    for tree in variables.values():
        for layer, ws in tree.items():
            leaves.setdefault(layer, {}).update({k: tuple(v.shape) for k, v in ws.items()})
    total = 0
    for layer in theirs:
        name = layer["name"]
        cls, shape = ((recorded[name][0], recorded[name][2]) if name in recorded else
                      (type(modules[name][0]).__name__, modules[name][1]))
        assert cls == layer["class_name"], (name, cls)
        assert [None, *shape[1:]] == layer["output_shape"], (name, shape)
        ws = {w["name"]: tuple(w["shape"]) for w in layer["weights"]}
        assert leaves.get(name, {}) == ws, (name, leaves.get(name), ws)
        count = sum(int(np.prod(s)) for s in ws.values())
        assert count == layer["params"], name
        total += count
    assert total == sub["params"] == 4_049_571


def test_imagenet_layer_names() -> None:
    """With `imagenet` only `rescaling_1` is added; every other layer keeps its name."""
    plain = _trace(lambda x: eff.build(x, "efficientnet_b0"), 32)[0].order
    imagenet = _trace(lambda x: eff.build(x, "efficientnet_b0", imagenet=True), 32)[0].order
    assert imagenet == plain[:2] + ["rescaling_1"] + plain[2:]


def test_drop_connect() -> None:
    """Identity in inference; with a `dropout` rng whole samples are dropped or scaled."""
    layer = eff.Dropout(0.5)
    x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (64, 4, 4, 3)), jnp.float32)
    variables = layer.init(jax.random.key(0), x)
    assert variables == {}
    assert jnp.array_equal(layer.apply(variables, x), x)
    y = np.asarray(layer.apply(variables, x, rngs={"dropout": jax.random.key(1)}))
    dropped = np.all(y == 0, axis=(1, 2, 3))
    kept = np.all(np.isclose(y, 2 * np.asarray(x)), axis=(1, 2, 3))
    assert np.all(dropped | kept) and 10 < dropped.sum() < 54


def test_initializers_match_keras() -> None:
    """fsjax's initializers draw Keras' `CONV_KERNEL_INITIALIZER` / `DENSE_KERNEL_INITIALIZER`
    distributions: VarianceScaling over fan_out (kh * kw * out for conv kernels, kh * kw *
    depth multiplier for depthwise ones, the output width for Dense), truncated normal with
    variance scale / fan_out, cut at two (pre-truncation) deviations, or uniform with that
    variance."""
    from keras.src.applications import efficientnet as keras_eff

    cases = ((inits.efficientnet_conv_init, keras_eff.CONV_KERNEL_INITIALIZER, (3, 3, 64, 128)),
             (inits.efficientnet_conv_init, keras_eff.CONV_KERNEL_INITIALIZER, (5, 5, 512, 1)),
             (inits.efficientnet_dense_init, keras_eff.DENSE_KERNEL_INITIALIZER, (256, 1000)))
    for ours, spec, shape in cases:
        config = spec["config"]
        assert spec["class_name"] == "VarianceScaling" and config["mode"] == "fan_out"
        fan_out = int(np.prod(shape[:-2])) * shape[-1]
        std = math.sqrt(config["scale"] / fan_out)
        if config["distribution"] == "truncated_normal":
            bound = 2 * std / 0.87962566103423978  # Keras' stddev correction, cut at 2 stddev
        else:
            assert config["distribution"] == "uniform"
            bound = math.sqrt(3.0) * std
        a = np.asarray(ours(jax.random.key(0), shape, jnp.float32))
        assert abs(a.std() / std - 1) < 0.03, (shape, a.std(), std)
        assert bound * 0.97 < np.abs(a).max() <= bound * (1 + 1e-6), (shape, bound)


def test_names_and_weights_files() -> None:
    assert eff.keras_model_name("efficientnet_b3", size=64, load_weights=True) == (
        "efficientnetb3")
    assert eff.weights_file("efficientnet_b0") == "efficientnetb0_notop.h5"
    assert eff.weights_file("efficientnet_b7", size=64) == "efficientnetb7_notop.h5"
    assert family("efficientnet_b5") is eff
    for other in ("efficientnet_v2_b0", "mobilenet"):
        with pytest.raises(ValueError):
            eff.build(jnp.zeros((1, 32, 32, 3)), other)
        with pytest.raises(ValueError):
            eff.weights_file(other)


def test_mixed_precision_builds() -> None:
    """Under a bfloat16 policy every layer computes in bfloat16, parameters stay float32."""
    from fsjax.nn import blocks
    from fsjax.nn.precision import Policy

    opts = blocks.BlockOptions(policy=Policy.named("bfloat16"))
    module = Wrapped(lambda x: eff.build(x, "efficientnet_b0", opts=opts, imagenet=True))
    out, variables = jax.eval_shape(module.init_with_output, jax.random.key(0),
                                    jnp.zeros((1, 32, 32, 3)))
    assert out.dtype == jnp.bfloat16 and out.shape == (1, 1, 1, 1280)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
