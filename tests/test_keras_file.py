"""Reading Faceswap's model files without Keras (fsjax.interop.keras_file): real files written by
Faceswap 3 (`.keras`) and Faceswap 2 (`.h5`), and hostile files that must be refused unread."""

import io
import json
import os
import pickle
import shutil
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
    ("class", "layer 'evil' has class 'system' (registered as 'os>system'), which is not a "
              "layer class of Faceswap's models"),
    ("registered", "layer 'evil' has class 'Dense' (registered as 'os>system')"),
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
    elif kind in ("class", "registered"):
        _rewrite(source, target, config=_add_layer(
            {"module": "keras.src.layers", "class_name": "system" if kind == "class" else "Dense",
             "registered_name": "os>system", "config": {"name": "evil"}}))
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


@pytest.mark.parametrize("depth", [100, 100_000])  # past the walk's limit; past json's own
def test_deeply_nested_json_is_refused_naming_the_file(faceswap_dir, tmp_path, depth):
    from fsjax.config import ConfigError
    from fsjax.config.faceswap_state import read_state

    nested = "[" * depth + "]" * depth
    source = faceswap_dir / KERAS
    target = tmp_path / "deep.keras"
    with zipfile.ZipFile(source) as archive:
        members = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    members["config.json"] = '{"class_name": "Functional", "config": ' + nested + "}"
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(KerasFileError, match=rf"{target}: the model config is not JSON \(JSON "
                                             r"nested more than 64 levels deep\)"):
        read(target)
    h5_target = tmp_path / "deep.h5"
    shutil.copy(faceswap_dir / FS2, h5_target)
    with h5py.File(h5_target, "r+") as h5:
        h5.attrs["model_config"] = '{"class_name": "Functional", "config": ' + nested + "}"
    with pytest.raises(KerasFileError, match=rf"{h5_target}: the model config is not JSON"):
        read(h5_target)
    state = tmp_path / "phaze_a_state.json"
    state.write_text('{"config": {"x": ' + nested + "}}")
    with pytest.raises(ConfigError, match=rf"{state}: cannot read the model state file \(JSON "
                                          "nested more than 64 levels deep"):
        read_state(state)


def test_a_weight_declaring_gigabytes_it_does_not_store_is_refused_in_bounded_memory(
        faceswap_dir, tmp_path):
    """A Faceswap 2 .h5 whose first weight is a chunked 32768 x 32768 float32 dataset (4 GiB)
    that was never written: the file stays small, and reading the weight would allocate 4 GiB.
    It is refused, naming the dataset and both sizes, under a 2 GiB address-space limit."""
    import subprocess
    import sys

    target = tmp_path / "dfl_sae.h5"
    shutil.copy(faceswap_dir / FS2, target)
    with h5py.File(target, "r+") as h5:
        group = h5["model_weights"]
        sub = next(group[n] for n in group.attrs["layer_names"]
                   if len(group[n].attrs.get("weight_names", [])))
        name = sub.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        del sub[name]
        sub.create_dataset(name, shape=(32768, 32768), dtype="float32", chunks=(256, 256))
    assert target.stat().st_size < 20 * 2**20
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "from fsjax.interop.keras_file import read, KerasFileError\n"
              "try:\n    read(sys.argv[1])\nexcept KerasFileError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{target}: model_weights/" in done.stdout
    assert ("declares shape (32768, 32768) (4,294,967,296 bytes of float32) but the file stores "
            "0 bytes of it") in done.stdout, done.stdout


def _store_declaring(sub: h5py.Group, name: str, shape: tuple[int, int], rng) -> None:
    """Replaces dataset `name` by a gzip-compressed float32 `shape` that stores three 4 MiB
    chunks of random bits, enough for the storage check to let its declared size through."""
    del sub[name]
    node = sub.create_dataset(name, shape=shape, dtype="float32", chunks=(1024, 1024),
                              compression="gzip")
    for i in range(3):
        node[i * 1024:(i + 1) * 1024, :1024] = rng.integers(
            0, 2**32, (1024, 1024), dtype=np.uint32).view(np.float32)


def test_weights_of_the_wrong_shape_are_refused_before_any_is_read(faceswap_dir, tmp_path):
    """Two weights of a Faceswap 2 .h5 replaced by compressed 16384 x 32768 float32 datasets
    (2 GiB each once read) that store 12 MiB each: reading them before comparing shapes would
    need 4 GiB. The import compares every shape with fsjax's model first and refuses the first,
    naming the weight, the dataset and both shapes, under a 2 GiB address-space limit."""
    import subprocess
    import sys

    folder = tmp_path / "faceswap"
    shutil.copytree(faceswap_dir / "legacy_h5/dfl_sae_liae", folder,
                    ignore=shutil.ignore_patterns("*.npz", "*_logs"))
    target = folder / "dfl_sae.h5"
    rng = np.random.default_rng(0)
    with h5py.File(target, "r+") as h5:
        sub = h5["model_weights/encoder_liae"]
        names = [n.decode() if isinstance(n, bytes) else n for n in sub.attrs["weight_names"]]
        kernels = [n for n in names if n.endswith("kernel:0")][:2]
        shapes = [tuple(sub[n].shape) for n in kernels]
        for name in kernels:
            _store_declaring(sub, name, (16384, 32768), rng)
    assert target.stat().st_size < 40 * 2**20
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "from fsjax.interop.keras_import import load, KerasFileError\n"
              "try:\n    load(sys.argv[1])\nexcept KerasFileError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    layer = kernels[0].rpartition("/")[0]
    assert done.stdout.strip() == (
        f"{target}: encoder_liae/{layer}/kernel has shape (16384, 32768); fsjax's model needs "
        f"{shapes[0]} (dataset /model_weights/encoder_liae/{kernels[0]})"), done.stdout


def test_a_weight_of_another_dtype_is_refused_naming_both(faceswap_dir, tmp_path):
    from fsjax.interop.keras_import import load

    folder = tmp_path / "faceswap"
    shutil.copytree(faceswap_dir / "legacy_h5/dfl_sae_liae", folder,
                    ignore=shutil.ignore_patterns("*.npz", "*_logs"))
    with h5py.File(folder / "dfl_sae.h5", "r+") as h5:
        sub = h5["model_weights/decoder_both"]
        name = sub.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        value = sub[name][()]
        del sub[name]
        sub.create_dataset(name, data=value.astype(np.int32))
    with pytest.raises(KerasFileError, match=r"decoder_both/.+/kernel has dtype int32; fsjax's "
                                             r"model needs float32 \(dataset "):
        load(folder)
