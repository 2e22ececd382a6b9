"""Phaze-A with a pretrained encoder (`enc_architecture` = a Keras-Applications network): the
network nested in `encoder` under its Keras model name behind Faceswap's input scaling, its
ImageNet weights read from a Keras weights file (never downloaded), and `keras_encoder` freezing
it (BatchNorm in inference mode, as Keras runs a frozen layer)."""

import dataclasses
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

from fsjax.config import (  # noqa: E402
    ConfigError,
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    load_experiment,
)
from fsjax.interop import pretrained  # noqa: E402
from fsjax.models import phaze_a  # noqa: E402
from fsjax.models.encoders import backbone, family  # noqa: E402
from fsjax.training import loop, resume  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCH, SIZE, NAME = "mobilenet", 64, "mobilenet_1.00_64"  # enc_scaling 29: 224 * 0.29 -> 64 px
LOADED = "mobilenet_1.00_224"  # Keras names it for 224 rows when ImageNet weights are asked for


def _config(tmp_path=None, faces=None, **options) -> ExperimentConfig:
    base = load_experiment(ROOT / "experiments" / "phaze_a_tiny.py")
    phaze = dataclasses.replace(base.model.phaze_a, enc_architecture=ARCH, enc_scaling=29,
                                **options)
    config = dataclasses.replace(base, model=dataclasses.replace(base.model, phaze_a=phaze))
    if tmp_path is None:
        return config
    return dataclasses.replace(
        config, data=DataConfig(faces_a=faces[0], faces_b=faces[1], num_processes=0),
        train=TrainConfig(model_dir=tmp_path / "model", batch_size=2, iterations=2,
                          no_logs=True, write_image=False, save_interval=2))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    from fsjax.data.demo import write_demo_faces

    return write_demo_faces(tmp_path_factory.mktemp("demo"), count=26, size=128, seed=8)


@pytest.fixture(scope="module")
def keras_weights(tmp_path_factory):
    """A Keras MobileNet with random weights and BatchNorm statistics, saved as Keras
    Applications ships its ImageNet files (Keras 2 `save_weights` layout) under the name Keras
    downloads it as, in a `$KERAS_HOME/models` folder."""
    import h5py

    keras.backend.clear_session()
    model = keras.applications.MobileNet(include_top=False, weights=None,
                                         input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(3)
    for w in model.weights:
        low = 0.5 if "variance" in w.name else -0.5
        w.assign(rng.uniform(low, low + 1.0, tuple(w.shape)).astype(np.float32))
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    path = home / "models" / family(ARCH).weights_file(ARCH, size=SIZE)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    model.save_weights(home / "mobilenet.weights.h5")  # Keras 3's own layout, for enc_weights_path
    weights = {layer.name: [np.asarray(w.numpy()) for w in layer.weights]
               for layer in model.layers if layer.weights}
    x = rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    return home, path, weights, x, np.asarray(model(x * 2 - 1, training=False))


def test_the_network_sits_in_the_encoder_behind_faceswaps_scaling():
    spec = phaze_a.build(_config(enc_load_weights=False))
    assert spec.input_size == SIZE and spec.pretrained.model_name == NAME
    assert spec.keras_encoder == f"encoder/{NAME}"
    x = jnp.zeros((1, SIZE, SIZE, 3))
    variables = jax.eval_shape(spec.module.init, jax.random.key(0), x, x)
    encoder = variables["params"]["encoder"]
    assert sorted(encoder) == ["dense", NAME]  # the network, then the bottleneck's Dense
    assert "conv1" in encoder[NAME] and "conv_pw_13_bn" in variables["batch_stats"]["encoder"][NAME]


def test_enc_load_weights_reads_the_keras_file_and_the_encoder_matches_keras(
        keras_weights, monkeypatch):
    home, path, weights, x, expected = keras_weights
    config = _config()
    spec = phaze_a.build(config)
    assert spec.pretrained.weights_file == path.name == "mobilenet_1_0_224_tf_no_top.h5"
    state = jax.jit(lambda k: spec.module.init(k, jnp.zeros((1, SIZE, SIZE, 3)),
                                               jnp.zeros((1, SIZE, SIZE, 3))))(jax.random.key(0))
    fresh = resume.TrainState(step=jnp.zeros((), jnp.int32), params=state["params"],
                              opt_state=(), model_state={"batch_stats": state["batch_stats"]})
    monkeypatch.setenv("KERAS_HOME", str(home))
    lines = []
    loaded = resume.load_pretrained(fresh, config, spec.pretrained, lines.append)
    assert lines == [f"Loaded the mobilenet encoder's pretrained weights (3,206,976 parameters) "
                     f"from {path}"]
    net = loaded.params["encoder"][LOADED]
    np.testing.assert_array_equal(net["conv1"]["kernel"], weights["conv1"][0])
    np.testing.assert_array_equal(loaded.model_state["batch_stats"]["encoder"][LOADED]["conv1_bn"][
        "moving_variance"], weights["conv1_bn"][3])
    # The rest of the model is untouched; the encoder (input scaling included) is Keras' model.
    np.testing.assert_array_equal(loaded.params["fc_a"]["dense_1"]["kernel"],
                                  state["params"]["fc_a"]["dense_1"]["kernel"])
    encoder = spec.module.encoder
    enc_vars = {"params": loaded.params["encoder"],
                "batch_stats": loaded.model_state["batch_stats"]["encoder"]}
    features = encoder.clone(bottleneck=None).apply(enc_vars, jnp.asarray(x))
    np.testing.assert_allclose(features, expected, atol=1e-5 * max(1, np.abs(expected).max()))
    # enc_weights_path: the file itself, or the folder holding it.
    for given in (path, path.parent):
        monkeypatch.delenv("KERAS_HOME", raising=False)
        with_path = _config(enc_weights_path=str(given))
        assert pretrained.find_weights(spec.pretrained, with_path.model.phaze_a.enc_weights_path
                                       ) == path
    # A Keras 3 `.weights.h5` (layers/<name>/vars) gives the same weights.
    keras3 = _config(enc_weights_path=str(home / "mobilenet.weights.h5"))
    again = resume.load_pretrained(fresh, keras3, spec.pretrained, lines.append)
    assert jax.tree.all(jax.tree.map(np.array_equal, again.params["encoder"][LOADED],
                                     loaded.params["encoder"][LOADED]))
    assert jax.tree.all(jax.tree.map(np.array_equal, again.model_state, loaded.model_state))


def test_a_missing_or_wrong_weights_file_is_a_clear_error(tmp_path, monkeypatch, keras_weights):
    spec = phaze_a.build(_config()).pretrained
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        pretrained.find_weights(spec)
    message = str(err.value)
    assert "mobilenet_1_0_224_tf_no_top.h5" in message and str(tmp_path / "models") in message
    assert "does not download" in message
    # Another network's file: its layers are not this one's.
    other = backbone.plan("mobilenet_v2", SIZE, load_weights=True)
    state = jax.eval_shape(backbone.Backbone(other).init, jax.random.key(0),
                           jnp.zeros((1, SIZE, SIZE, 3)))
    variables = {c: {"encoder": {other.model_name: dict(t)}} for c, t in state.items()}
    with pytest.raises(pretrained.KerasFileError, match="no weights for layer"):
        pretrained.load(variables, other, keras_weights[1])


def test_training_with_keras_encoder_frozen_keeps_the_pretrained_network(
        tmp_path, faces, keras_weights, monkeypatch, capsys):
    """`--freeze-weights` with Phaze-A's `keras_encoder`: the pretrained layers (BatchNorm
    statistics included) stay exactly as read from the file while the rest trains."""
    from fsjax.training import sharding

    home, path, weights, _, _ = keras_weights
    monkeypatch.setenv("KERAS_HOME", str(home))
    make_mesh = sharding.make_mesh  # one device: this is about weights, not scale-out
    monkeypatch.setattr(sharding, "make_mesh",
                        lambda devices=None: make_mesh(devices or jax.devices()[:1]))
    config = _config(tmp_path, faces)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, freeze_weights=True, freeze_layers=("keras_encoder",)))
    state = loop.train_and_evaluate(config)
    out = capsys.readouterr().out
    assert f"Frozen (not trained): encoder/{LOADED}" in out
    assert "pretrained weights (3,206,976 parameters)" in out
    assert int(state.step) == 2
    net = state.params["encoder"][LOADED]
    stats = state.model_state["batch_stats"]["encoder"][LOADED]
    np.testing.assert_array_equal(net["conv_dw_5"]["kernel"], weights["conv_dw_5"][0])
    np.testing.assert_array_equal(stats["conv_pw_13_bn"]["moving_mean"],
                                  weights["conv_pw_13_bn"][2])
    assert not np.array_equal(state.params["encoder"]["dense"]["kernel"],  # the bottleneck trains
                              jax.device_get(_initial_dense(config)))
    # fsjax has no Keras graph for a model it created with a pretrained encoder: said, not
    # written wrong.
    from fsjax.tools import export_keras

    out = tmp_path / "x" / "phaze_a.keras"
    assert export_keras.main([str(config.train.model_dir), "--out", str(out)]) != 0
    assert "with a pretrained encoder (mobilenet)" in capsys.readouterr().err
    assert not out.exists()
    # --load-weights (load_layers ["encoder"], Faceswap's default) into a new model that freezes
    # its whole encoder: it holds the first model's encoder, the trained bottleneck (which the
    # pretrained file does not have) and the nested network's statistics included.
    second = dataclasses.replace(config, train=dataclasses.replace(
        config.train, model_dir=tmp_path / "second", load_weights=config.train.model_dir,
        freeze_layers=("encoder",), iterations=1, save_interval=1))
    again = loop.train_and_evaluate(second)
    assert "Loaded weights of encoder" in capsys.readouterr().out
    first, loaded = ({"params": s.params["encoder"], **{
        k: v["encoder"] for k, v in s.model_state.items()}} for s in (state, again))
    assert jax.tree.all(jax.tree.map(np.array_equal, first, loaded))


def _initial_dense(config):
    spec = phaze_a.build(config)
    init_key = jax.random.split(jax.random.key(config.train.seed), 3)[0]
    x = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    return jax.jit(lambda k: spec.module.init(k, jnp.zeros(x.shape), jnp.zeros(x.shape))[
        "params"]["encoder"]["dense"]["kernel"])(init_key)


def test_a_frozen_network_runs_batchnorm_on_its_moving_statistics():
    spec = phaze_a.build(_config(enc_load_weights=False))
    encoder = spec.module.encoder.clone(bottleneck=None)
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (4, SIZE, SIZE, 3)), jnp.float32)
    variables = encoder.init(jax.random.key(0), x)
    inference = encoder.apply(variables, x)
    training, updated = encoder.apply(variables, x, mutable=["batch_stats"])
    assert not np.allclose(training, inference, atol=1e-3)  # batch statistics
    frozen = encoder.clone(frozen_backbone=True)
    out, kept = frozen.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_array_equal(out, inference)
    assert jax.tree.all(jax.tree.map(np.array_equal, dict(kept["batch_stats"]),
                                     dict(variables["batch_stats"])))


def test_keras_encoder_resolves_as_faceswap_with_faceswap_compat(capsys):
    """Faceswap freezes the sub-model named like the Keras-Applications function ("MobileNet"),
    which MobileNet's model ("mobilenet_1.00_64") is not: with `faceswap_compat` nothing is
    frozen, with a warning; by default the network is. fs_original drops `keras_encoder`."""
    available = ["encoder", "fc_a", "fc_b", "decoder_both"]
    fixed = phaze_a.build(_config(enc_load_weights=False))
    assert resume.resolve_layers(("keras_encoder",), available, "f", fixed.keras_encoder) == (
        f"encoder/{NAME}",)
    compat = phaze_a.build(_config(enc_load_weights=False, faceswap_compat=True))
    assert (compat.keras_encoder, compat.keras_encoder_unmatched) == ("", "encoder/MobileNet")
    lines = []
    assert resume.resolve_layers(("keras_encoder", "fc_a"), available, "f", compat.keras_encoder,
                                 compat.keras_encoder_unmatched,
                                 lines.append) == ("fc_a",)
    assert "'encoder/MobileNet', which matches no sub-model" in lines[0]
    assert resume.resolve_layers(("keras_encoder",), available, "f", "") == ()
    # MobileNetV3's model is named like its function: Faceswap does freeze that one.
    v3 = backbone.plan("mobilenet_v3_small", SIZE, load_weights=False, faceswap_compat=True)
    assert backbone.freeze_path(v3, True) == ("encoder/MobileNetV3Small", "")


BUILD_SCRIPT = '''
base = keras.saving.load_model(sys.argv[1], custom_objects=custom, compile=False, safe_mode=True)
# Faceswap's Phaze-A encoder for a Keras-Applications network: Faceswap's input scaling, the
# network nested as a sub-model, then the dense bottleneck (Flatten + Dense).
function, scaling = sys.argv[5], sys.argv[6]
face = keras.Input((64, 64, 3))
if function == "small_clip":  # CLIP's shape at a fraction of its width, Faceswap's layer classes
    sys.path.insert(0, sys.argv[7])
    import test_encoders_clip as clip

    for cls in (clip.ClassEmbedding, clip.PositionalEmbedding, clip.Projection):
        cls.__module__ = "lib.model.networks.clip"
    clip.QuickGELU.__module__ = "lib.model.layers"
    net = clip.reference(64, **clip.SMALL)
else:
    net = getattr(keras.applications, function)(include_top=False, weights=None,
                                                input_shape=(64, 64, 3))
x = {"0,255": lambda: face * 255.0, "0,1": lambda: face}.get(scaling, lambda: face * 2.0 - 1.0)()
x = net(x)
x = keras.layers.Dense(128, name="dense")(keras.layers.Flatten(name="flatten")(x))
encoder = keras.Model(face, x, name="encoder")
rng = np.random.default_rng(5)
for w in encoder.weights:  # distinct values everywhere, statistics included
    low = 0.5 if "variance" in w.name else -0.1
    w.assign(rng.uniform(low, low + 0.2, tuple(w.shape)).astype(w.dtype))
a, b = keras.Input((64, 64, 3), name="face_in_a"), keras.Input((64, 64, 3), name="face_in_b")
decoder = base.get_layer("decoder_both")
outputs = [decoder(base.get_layer("fc_a")(encoder(a))), decoder(base.get_layer("fc_b")(encoder(b)))]
model = keras.Model([a, b], outputs, name="phaze_a")
model.save(sys.argv[2])
data = np.load(sys.argv[3])
outputs = model.predict([data["input_a"], data["input_b"]], verbose=0)
np.savez(sys.argv[4], *[np.asarray(o) for o in keras.tree.flatten(outputs)])
'''
PREDICT_SCRIPT = '''
model = keras.saving.load_model(sys.argv[1], custom_objects=custom, compile=False, safe_mode=True)
data = np.load(sys.argv[2])
outputs = model.predict([data["input_a"], data["input_b"]], verbose=0)
np.savez(sys.argv[3], *[np.asarray(o) for o in keras.tree.flatten(outputs)])
'''


def _keras(tmp_path, script, *args):
    """Runs `script` in a real Keras (JAX backend) with Faceswap's custom layers defined."""
    import subprocess
    import sys

    from test_keras_export import KERAS_SCRIPT

    file = tmp_path / f"keras_{abs(hash(script))}.py"
    file.write_text(KERAS_SCRIPT[:KERAS_SCRIPT.index("args = sys.argv[1:]")] + script)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(file), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _faceswap_model(tmp_path, arch, enc_scaling):
    """A Faceswap-shaped Phaze-A saved by real Keras (`<folder>/phaze_a.keras` and its state
    file) with `arch`'s Keras-Applications network nested in the encoder, 64 px in; and the
    faces and Keras' outputs on them. The fc and decoder sub-models come from an fsjax export of
    the same options with Faceswap's own encoder (their shapes do not depend on the encoder)."""
    import json

    from fsjax.checkpoint import state_file
    from fsjax.interop import keras_export, keras_graph
    from fsjax.models.encoders import ENCODERS
    from fsjax.training.summary import merge_collections

    spec = phaze_a.build(load_experiment(ROOT / "experiments" / "phaze_a_tiny.py"))
    faces = np.random.default_rng(1).uniform(0, 1, (2, 2, SIZE, SIZE, 3)).astype(np.float32)
    variables = jax.jit(spec.module.init)(jax.random.key(1), faces[0], faces[1])
    graph = keras_graph.model_config(keras_graph.trace(spec.module, SIZE, spec.graph_name))
    keras_export.write_keras(tmp_path / "base.keras", graph,
                             keras_export.plan(graph, merge_collections(variables)), "3.14.1")
    np.savez(tmp_path / "inputs.npz", input_a=faces[0], input_b=faces[1])
    folder = tmp_path / "faceswap"
    folder.mkdir()
    info = ENCODERS[arch]
    function = "small_clip" if arch.startswith("clipv_") else info.keras_name
    _keras(tmp_path, BUILD_SCRIPT, tmp_path / "base.keras", folder / "phaze_a.keras",
           tmp_path / "inputs.npz", tmp_path / "keras.npz", function,
           ",".join(map(str, info.scaling)), ROOT / "tests")
    config = _config(enc_load_weights=False)
    phaze = dataclasses.replace(config.model.phaze_a, enc_architecture=arch,
                                enc_scaling=enc_scaling)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, phaze_a=phaze))
    (folder / "phaze_a_state.json").write_text(json.dumps(state_file.new_state("phaze_a", config)))
    expected = np.load(tmp_path / "keras.npz")
    return folder, faces, [expected[k] for k in sorted(expected.files)]


def _assert_outputs(model, variables, faces, expected, tol=1e-5):
    ours = jax.tree.leaves(jax.jit(model.apply)(variables, faces[0], faces[1]))
    assert len(ours) == len(expected) == 2
    for got, want in zip(ours, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=tol)


def _same_weights(ours_path, theirs_path):
    from test_keras_export import _h5

    ours, theirs = _h5(ours_path), _h5(theirs_path)
    assert sorted(ours) == sorted(theirs)
    for key, (attrs, array) in theirs.items():
        assert ours[key][0] == attrs, key
        if array is not None:
            assert ours[key][1].tobytes() == array.tobytes(), key


def test_a_faceswap_model_with_a_pretrained_encoder_imports_and_gives_its_outputs(tmp_path):
    """Keras' MobileNet nested in the encoder behind Faceswap's (-1, 1) scaling: fsjax imports
    the Keras-saved model by name, its forward equals Keras', and it goes back out into an fsjax
    model folder and to Faceswap's file again, weight for weight."""
    from fsjax.interop import keras_import
    from fsjax.tools import export_keras, import_keras

    folder, faces, expected = _faceswap_model(tmp_path, ARCH, 29)
    model, imported = keras_import.load(folder)
    assert sorted(imported["params"]["encoder"]) == ["dense", NAME]
    _assert_outputs(model.spec.module, imported, faces, expected)
    assert import_keras.main([str(folder), "--out", str(tmp_path / "fsjax")]) == 0
    back = tmp_path / "back" / "phaze_a.keras"
    assert export_keras.main([str(tmp_path / "fsjax"), "--out", str(back)]) == 0
    _same_weights(back, folder / "phaze_a.keras")


@pytest.mark.slow
def test_a_faceswap_efficientnet_phaze_a_trains_resumes_exports_and_reimports(tmp_path, faces,
                                                                             monkeypatch):
    """Keras' EfficientNetB0 (0..255 scaling, its own Rescaling and Normalization) nested in the
    encoder: imported, trained 2 iterations, resumed to 4, exported (Keras runs the export to
    fsjax's outputs of the trained weights) and imported again, bit for bit."""
    from fsjax.checkpoint.manager import Checkpoints
    from fsjax.interop import keras_import
    from fsjax.tools import export_keras, import_keras
    from fsjax.train import parse_cli
    from fsjax.training import sharding

    make_mesh = sharding.make_mesh
    monkeypatch.setattr(sharding, "make_mesh",
                        lambda devices=None: make_mesh(devices or jax.devices()[:1]))
    folder, inputs, expected = _faceswap_model(tmp_path, "efficientnet_b0", 29)
    model, imported = keras_import.load(folder)
    assert sorted(imported["params"]["encoder"]) == ["dense", "efficientnetb0"]
    _assert_outputs(model.spec.module, imported, inputs, expected)
    run = tmp_path / "fsjax"
    assert import_keras.main([str(folder), "--out", str(run)]) == 0
    for target in (2, 4):  # a new session, then a resume
        config = parse_cli(["--config", str(run), "--faces-a", str(faces[0]), "--faces-b",
                            str(faces[1]), "-b", "2", "-i", str(target), "-s", "2",
                            "--no-logs", "--config.data.num-processes", "0"])
        state = loop.train_and_evaluate(config)
        assert int(state.step) == target
    checkpoints = Checkpoints(run, "phaze_a", writable=False)
    try:
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    trained = {"params": saved["params"], **saved["model_state"]}
    assert not np.array_equal(trained["params"]["encoder"]["efficientnetb0"]["stem_conv"][
        "kernel"], imported["params"]["encoder"]["efficientnetb0"]["stem_conv"]["kernel"])
    back = tmp_path / "back" / "phaze_a.keras"
    assert export_keras.main([str(run), "--out", str(back)]) == 0
    _keras(tmp_path, PREDICT_SCRIPT, back, tmp_path / "inputs.npz", tmp_path / "back.npz")
    result = np.load(tmp_path / "back.npz")
    _assert_outputs(model.spec.module, trained, inputs,
                    [result[k] for k in sorted(result.files)])
    again = tmp_path / "again"
    assert import_keras.main([str(back.parent), "--out", str(again)]) == 0
    _, reimported = keras_import.load(back.parent)
    assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)),
                                     reimported, trained))


def test_mobilenet_v3_takes_the_mobilenet_options_and_faceswap_compat_ignores_them():
    """Faceswap's option lookup misses MobileNetV3 (keyed `mobilenet_v3`): it builds width 1
    with Keras' 0..255 preprocessing; fsjax applies the options (docs/compat.md)."""
    fixed = backbone.plan("mobilenet_v3_small", SIZE, load_weights=False, mobilenet_width=0.75,
                          mobilenet_minimalistic=True)
    assert dict(fixed.options) == {"alpha": 0.75, "minimalistic": True,
                                   "include_preprocessing": False}
    assert fixed.weights_file == (
        "weights_mobilenet_v3_small_minimalistic_224_0.75_float_no_top_v2.h5")
    compat = backbone.plan("mobilenet_v3_small", SIZE, load_weights=False, mobilenet_width=0.75,
                           mobilenet_minimalistic=True, faceswap_compat=True)
    assert dict(compat.options) == {"include_preprocessing": True}
    assert compat.weights_file == "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    shapes = [backbone.describe(spec, SIZE)[0] for spec in (fixed, compat)]
    assert shapes[0][:2] == shapes[1][:2] == (2, 2)


def test_clip_weights_load_by_position_and_skip_what_does_not_fit(tmp_path, monkeypatch):
    """Faceswap's CLIP files are read by position (their layer names differ from the model's)
    with Keras' skip_mismatch: at another input size the positional table stays as initialised,
    with a warning. A small transformer of CLIP's shape stands in for ViT-B-32 (same layers and
    names; the real one's file is 350 MB)."""
    import h5py
    import test_encoders_clip as ref

    clip = family("clipv_vit-b-32")
    small = dataclasses.replace(clip.CONFIGS["clipv_vit-b-32"], width=128, layers=2, patch=8,
                                embed_dim=64)
    monkeypatch.setitem(clip.CONFIGS, "clipv_vit-b-32", small)
    keras.backend.clear_session()
    saved = ref.reference(48, small.width, small.layers, small.heads, small.patch,
                          small.embed_dim)  # 48 px: a 6x6 grid, where fsjax runs 4x4
    rng = np.random.default_rng(4)
    for w in saved.weights:
        w.assign(rng.normal(0, 0.1, tuple(w.shape)).astype(np.float32))
    for i, layer in enumerate(saved.layers):  # Faceswap's files spell the names otherwise
        layer.name = f"file_layer_{i}"
    path = tmp_path / "CLIPv_ViT-B-32_v1.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, saved)
    spec = backbone.plan("clipv_vit-b-32", 32, load_weights=True)
    assert spec.weights_file == path.name
    state = jax.jit(backbone.Backbone(spec).init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    variables = {c: {"encoder": {"visual": dict(t)}} for c, t in state.items()}
    lines = []
    loaded, count = pretrained.load(variables, spec, path, lines.append)
    net = loaded["params"]["encoder"]["visual"]
    weighted = [layer for layer in saved.layers if layer.weights]
    by_name = dict(zip(backbone.weighted_layers(spec, 32), weighted, strict=True))
    np.testing.assert_array_equal(net["visual_conv1"]["kernel"],
                                  by_name["visual_conv1"].weights[0].numpy())
    attn = by_name["visual_transformer_resblocks_1_attn"]
    np.testing.assert_array_equal(net["visual_transformer_resblocks_1_attn"]["value"]["bias"],
                                  attn.weights[5].numpy())  # q, k, v kernel and bias, then out
    np.testing.assert_array_equal(net["visual_proj"]["variable_2"],
                                  by_name["visual_proj"].weights[0].numpy())
    np.testing.assert_array_equal(net["visual_positional_embedding"]["variable_1"],
                                  state["params"]["visual_positional_embedding"]["variable_1"])
    assert lines == [f"warning: {path.name}: the weights of visual_positional_embedding do not "
                     "fit this input size and stay as initialised, as in Faceswap (Keras' "
                     "skip_mismatch)"]
    assert count == saved.count_params() - (6 * 6 + 1) * small.width  # the skipped table


def test_a_faceswap_model_with_a_clip_encoder_imports_and_gives_its_outputs(tmp_path,
                                                                          monkeypatch):
    """A CLIP vision transformer (`visual`, Keras MultiHeadAttention with its query / key /
    value / output inner layers, Faceswap's one-table embedding layers) nested in the encoder:
    imported by name, Keras' outputs. A small transformer of CLIP's shape stands in for
    ViT-B-32 (`test_encoders_clip.SMALL`)."""
    import test_encoders_clip as ref

    from fsjax.interop import keras_import

    clip = family("clipv_vit-b-32")
    small = dataclasses.replace(clip.CONFIGS["clipv_vit-b-32"], width=ref.SMALL["width"],
                                layers=ref.SMALL["num_layers"], patch=ref.SMALL["patch"],
                                embed_dim=ref.SMALL["embed_dim"])
    monkeypatch.setitem(clip.CONFIGS, "clipv_vit-b-32", small)
    folder, faces, expected = _faceswap_model(tmp_path, "clipv_vit-b-32", 29)
    model, imported = keras_import.load(folder)
    net = imported["params"]["encoder"]["visual"]
    assert set(net["visual_transformer_resblocks_1_attn"]) == {"query", "key", "value",
                                                               "attention_output"}
    _assert_outputs(model.spec.module, imported, faces, expected)
    from fsjax.tools import export_keras, import_keras

    assert import_keras.main([str(folder), "--out", str(tmp_path / "fsjax")]) == 0
    back = tmp_path / "back" / "phaze_a.keras"
    assert export_keras.main([str(tmp_path / "fsjax"), "--out", str(back)]) == 0
    _same_weights(back, folder / "phaze_a.keras")


@pytest.mark.slow
def test_a_faceswap_model_with_a_convnext_encoder_imports_and_exports(tmp_path):
    """Keras' ConvNeXtTiny (its stem and downsampling blocks are nested Sequential models, its
    LayerScale weights one-table layers) behind Faceswap's 0..255 scaling."""
    from fsjax.interop import keras_import
    from fsjax.tools import export_keras, import_keras

    folder, faces, expected = _faceswap_model(tmp_path, "convnext_tiny", 29)
    model, imported = keras_import.load(folder)
    _assert_outputs(model.spec.module, imported, faces, expected)
    assert import_keras.main([str(folder), "--out", str(tmp_path / "fsjax")]) == 0
    back = tmp_path / "back" / "phaze_a.keras"
    assert export_keras.main([str(tmp_path / "fsjax"), "--out", str(back)]) == 0
    _same_weights(back, folder / "phaze_a.keras")
