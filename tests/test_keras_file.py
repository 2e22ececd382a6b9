"""Reading Faceswap's model files without Keras (fsjax.interop.keras_file): real files written by
Faceswap 3 (`.keras`) and Faceswap 2 (`.h5`), and hostile files that must be refused unread."""

import io
import json
import os
import pickle
import zipfile

import h5py
import numpy as np
import pytest

from fsjax.interop.keras_file import KerasFileError, read

KERAS = "models/phaze_a_tiny_gblock/phaze_a.keras"  # Faceswap 3, trained 2 iterations
FS2 = "legacy_h5/dfl_sae_liae/dfl_sae.h5"  # Faceswap 2 (tf.keras 2.10), dfl_sae liae


def test_faceswap3_file_every_weight_by_faceswaps_names(faceswap_dir):
    model = read(faceswap_dir / KERAS)
    assert (model.format, model.keras_version, model.has_optimizer) == ("keras3", "3.14.1", False)
    manifest = json.loads(
        (faceswap_dir / "models/phaze_a_tiny_gblock/manifest.json").read_text())
    with zipfile.ZipFile(faceswap_dir / KERAS) as archive:
        raw = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    seen = 0
    for sub in manifest["sub_models"]:
        layers = {layer["name"]: layer for layer in sub["layers"] if layer["weights"]}
        assert set(model.weights[sub["name"]]) == set(layers), sub["name"]
        for name, layer in layers.items():
            arrays = model.weights[sub["name"]][name]
            assert [list(a.shape) for a in arrays] == [w["shape"] for w in layer["weights"]]
            for array, weight in zip(arrays, layer["weights"], strict=True):
                # Keras's own object path for this weight holds the same numbers.
                np.testing.assert_array_equal(array, raw[weight["h5_path"]][()])
                seen += array.size
    assert set(model.weights) == {s["name"] for s in manifest["sub_models"]}
    assert seen == manifest["total_params"] == 1_550_627


def test_faceswap2_file_every_weight_in_keras_order(faceswap_dir):
    model = read(faceswap_dir / FS2)
    assert (model.format, model.keras_version) == ("keras2", "2.10.0")
    assert list(model.weights) == ["encoder_liae", "intermediate_both", "intermediate_b",
                                   "decoder_both"]
    with h5py.File(faceswap_dir / FS2, "r") as raw:
        for sub, layers in model.weights.items():
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in raw["model_weights"][sub].attrs["weight_names"]]
            flat = [(layer, a) for layer, arrays in layers.items() for a in arrays]
            assert len(flat) == len(names)
            by_layer = {}
            for name in names:
                by_layer.setdefault(name.rpartition("/")[0], []).append(name)
            for layer, arrays in layers.items():
                for array, name in zip(arrays, by_layer[layer], strict=True):
                    np.testing.assert_array_equal(array, raw["model_weights"][sub][name][()])
    assert model.weights["decoder_both"]["face_out_128_both_0_conv2d"][0].shape == (5, 5, 24, 3)
    assert model.config["name"] == "dfl_sae_liae"


def _rewrite(source, target, *, config=None, extra=(), weights=None, compress=None):
    """A copy of a .keras file with its config, weights or members changed."""
    with zipfile.ZipFile(source) as archive:
        members = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    if config is not None:
        members["config.json"] = json.dumps(config(json.loads(members["config.json"])))
    if weights is not None:
        members["model.weights.h5"] = weights
    with zipfile.ZipFile(target, "w", compress or zipfile.ZIP_STORED) as archive:
        for name, data in [*members.items(), *extra]:
            archive.writestr(name, data)
    return target


def _add_layer(layer):
    def edit(config):
        config["config"]["layers"][2]["config"]["layers"].append(layer)
        return config
    return edit


def _h5(build):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        build(f)
    return buffer.getvalue()


def _one_layer(make_dataset):
    def build(f):
        sub = f.create_group("layers/functional")
        sub.create_group("vars").attrs["name"] = "encoder"
        layer = sub.create_group("layers/conv2d/vars")
        layer.attrs["name"] = "conv_128_0_conv2d"
        make_dataset(layer)
    return _h5(build)


@pytest.mark.parametrize("kind, message", [
    ("lambda", "layer 'evil' is a Lambda layer, which carries code"),
    ("module", "layer 'evil' (Dense) comes from module 'os'"),
    ("escape", "unexpected member '../../evil.sh'"),
    ("bomb", "expands 104,857,600 bytes from"),
    ("shape", "has the absurd shape (1048576, 1048576, 64)"),
    ("dtype", "has dtype object, not a weight's"),
    ("link", "is a link; a saved model holds none"),
    ("junk", "neither a Keras 3 .keras zip nor a Keras 2 .h5 file"),
])
def test_hostile_files_are_refused_naming_file_and_problem(faceswap_dir, tmp_path, kind,
                                                           message):
    source, target = faceswap_dir / KERAS, tmp_path / f"{kind}.keras"
    if kind == "lambda":
        _rewrite(source, target, config=_add_layer(
            {"module": "keras.layers", "class_name": "Lambda",
             "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                     "config": {"code": "4wEAAAAA"}}}}))
    elif kind == "module":
        _rewrite(source, target, config=_add_layer(
            {"module": "os", "class_name": "Dense", "config": {"name": "evil"}}))
    elif kind == "escape":
        _rewrite(source, target, extra=[("../../evil.sh", "rm -rf ~")])
    elif kind == "bomb":
        _rewrite(source, target, weights=b"\0" * 100 * 2**20, compress=zipfile.ZIP_DEFLATED)
    elif kind == "shape":  # a chunked dataset: huge shape, tiny file
        _rewrite(source, target, weights=_one_layer(lambda g: g.create_dataset(
            "0", shape=(2**20, 2**20, 64), dtype="f4", chunks=(1, 1, 64))))
    elif kind == "dtype":
        _rewrite(source, target, weights=_one_layer(lambda g: g.create_dataset(
            "0", data=np.array(["x"], dtype=object), dtype=h5py.string_dtype())))
    elif kind == "link":
        _rewrite(source, target, weights=_one_layer(lambda g: g.__setitem__(
            "0", h5py.ExternalLink("/etc/passwd", "/"))))
    else:
        target.write_bytes(os.urandom(4096))
    with pytest.raises(KerasFileError) as info:
        read(target)
    assert str(info.value).startswith(f"{target}: ")
    assert message in str(info.value)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_optimizer_is_never_unpickled(faceswap_dir, tmp_path):
    marker = tmp_path / "unpickled"
    target = _rewrite(faceswap_dir / KERAS, tmp_path / "pickle.keras",
                      extra=[("optimizer.pt", pickle.dumps(_Exploit(marker)))])
    model = read(target)
    assert model.has_optimizer and not marker.exists()
    assert pickle.loads(pickle.dumps(_Exploit(marker))) and marker.exists()  # the payload works


def test_a_faceswap2_file_with_a_lambda_layer_is_refused(tmp_path):
    path = tmp_path / "lambda.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {
            "name": "original", "layers": [{"class_name": "Lambda", "config": {
                "name": "evil", "function": ["4wEAAAAA", None, None]}}]}})
        f.create_group("model_weights")
    with pytest.raises(KerasFileError, match="layer 'evil' is a Lambda layer"):
        read(path)
