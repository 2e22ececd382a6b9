"""`python -m fsjax.tools.import_keras SRC --out DIR`: a Faceswap model becomes an fsjax folder
that resumes training, with Faceswap's optimizer state where it maps onto optax's.

The optimizer files are written here the way Faceswap writes them (torch's `optimizer.pt` inside
the `.keras` zip; tf.keras's `optimizer_weights` in a Faceswap 2 `.h5`), with each parameter's
moments numbered from Faceswap's own layer manifest, not from fsjax's ordering code.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import h5py
import jax
import numpy as np
import pytest
from torch_save import torch_save

from fsjax.checkpoint.manager import Checkpoints
from fsjax.config import ConfigError, load_experiment
from fsjax.data.demo import write_demo_faces
from fsjax.interop import keras_import
from fsjax.tools import import_keras

PHAZE = "models/phaze_a_tiny_gblock"
LEGACY = "legacy_h5/dfl_sae_liae"


def _adam_state(opt_state):
    """Adam's `count`, `mu` and `nu` as the checkpoint holds them (orbax gives back nested
    dicts and lists: the layout `fsjax.optim.optimizers` documents)."""
    inner = opt_state["optimizer"]["inner_state"]
    (adam,) = [part for part in inner if isinstance(part, dict) and "mu" in part]
    return adam


def _manifest_variables(folder):
    """(sub, layer, var, shape, trainable) in the Keras model's variable order, from Faceswap."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return [(sub["name"], layer["name"], w["path"].rsplit("/", 1)[1], tuple(w["shape"]),
             w["trainable"])
            for sub in manifest["sub_models"] for layer in sub["layers"]
            for w in layer["weights"]]


def _torch_adam(variables, step, seed=0, scaler=None):
    """Faceswap 3's `optimizer.pt` for these variables, and the moments it holds by name."""
    rng = np.random.default_rng(seed)
    trainable = [v for v in variables if v[4]]
    decay = [v for v in trainable if len(v[3]) > 1 and v[2] != "bias"]
    rest = [v for v in trainable if v not in decay]
    state, moments = {}, {}
    for pid, (sub, layer, var, shape, _) in enumerate(decay + rest):
        m = rng.normal(size=shape).astype(np.float32)
        v = rng.uniform(size=shape).astype(np.float32)
        state[pid] = {"step": np.array(float(step)), "exp_avg": m, "exp_avg_sq": v}
        moments[(sub, layer, var)] = (m, v)
    groups = [{"params": list(range(len(decay))), "lr": 5e-5, "betas": (0.9, 0.999),
               "eps": 1e-7, "weight_decay": 0.0, "amsgrad": False},
              {"params": list(range(len(decay), len(decay) + len(rest))), "lr": 5e-5,
               "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0, "amsgrad": False}]
    blob = torch_save({"version": 1.0, "optimizer": {"state": state, "param_groups": groups},
                       "scaler": scaler})
    return blob, moments


def _with_member(source, target, name, data):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.npz"))
    keras = next(target.glob("*.keras"))
    with zipfile.ZipFile(keras, "a") as archive:
        archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return target


def test_a_mixed_precision_model_keeps_float16_and_its_loss_scale(faceswap_dir, tmp_path,
                                                                  capsys):
    """Faceswap 3 trains mixed precision through torch's GradScaler, saved in optimizer.pt."""
    source = faceswap_dir / PHAZE
    scaler = {"scale": 8192.0, "growth_factor": 2.0, "backoff_factor": 0.5,
              "growth_interval": 2000, "_growth_tracker": 17}
    blob, _ = _torch_adam(_manifest_variables(source), step=2, scaler=scaler)
    folder = _with_member(source, tmp_path / "faceswap", "optimizer.pt", blob)
    state_path = folder / "phaze_a_state.json"
    state = json.loads(state_path.read_text())
    state["config"]["mixed_precision"] = True
    state_path.write_text(json.dumps(state))
    out = tmp_path / "fsjax"
    assert import_keras.main([str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained this model with mixed precision: it continues in fsjax's float16" in printed
    assert "Imported Faceswap's loss scale 8192 (17 finite steps since it grew)" in printed
    assert load_experiment(out).model.dtype == "float16"
    written = json.loads((out / "phaze_a_state.json").read_text())["config"]
    assert written["mixed_precision"] is True and written["dtype"] == "float16"
    checkpoints = Checkpoints(out, "phaze_a", writable=False)
    try:
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    assert float(saved["loss_scale"]["scale"]) == 8192.0
    assert int(saved["loss_scale"]["good_steps"]) == 17


def _check_moments(opt_state, moments, step):
    adam = _adam_state(opt_state)
    assert int(adam["count"]) == int(opt_state["optimizer"]["count"]) == step
    for (sub, layer, var), (m, v) in moments.items():
        np.testing.assert_array_equal(np.asarray(adam["mu"][sub][layer][var]), m)
        np.testing.assert_array_equal(np.asarray(adam["nu"][sub][layer][var]), v)
    assert len(jax.tree.leaves(adam["mu"])) == len(moments)


def test_a_faceswap_3_model_with_its_optimizer_imports_and_resumes(faceswap_dir, tmp_path,
                                                                    capsys, monkeypatch):
    source = faceswap_dir / PHAZE
    blob, moments = _torch_adam(_manifest_variables(source), step=2)
    folder = _with_member(source, tmp_path / "faceswap", "optimizer.pt", blob)
    out = tmp_path / "fsjax"
    assert import_keras.main([str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Imported Faceswap's Adam state at optimizer step 2" in printed
    assert f"python -m fsjax.train --config {out}" in printed

    state = json.loads((out / "phaze_a_state.json").read_text())
    faceswap = json.loads((source / "phaze_a_state.json").read_text())
    assert state["iterations"] == faceswap["iterations"] == 2
    assert state["sessions"] == faceswap["sessions"]
    assert (out / "phaze_a_logs/session_1/train").is_dir()

    checkpoints = Checkpoints(out, "phaze_a", writable=False)
    try:
        assert checkpoints.latest_step() == 2 and checkpoints.has_optimizer(2)
        saved, data_iter = checkpoints.restore(jax.sharding.SingleDeviceSharding(
            jax.devices()[0]))
    finally:
        checkpoints.close()
    assert data_iter == {}
    _check_moments(saved["opt_state"], moments, 2)
    # The weights are those `load` reads (already matched to Keras's outputs elsewhere).
    _, variables = keras_import.load(source)
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(saved["params"]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # `--config DIR` gives the options Faceswap built the model with (outside the ranges the
    # command line allows), and the run resumes at Faceswap's iteration with the imported Adam.
    config = load_experiment(out)
    assert config.model.phaze_a.fc_max_filters == 32 and config.train.model_dir == out
    from fsjax.train import main as train
    from fsjax.train import parse_cli
    from fsjax.training import sharding

    make_mesh = sharding.make_mesh  # one device: test_step covers eight
    monkeypatch.setattr(sharding, "make_mesh",
                        lambda devices=None: make_mesh(devices or jax.devices()[:1]))

    with pytest.raises(ConfigError, match="model's options are locked"):
        parse_cli(["--config", str(out), "--config.model.phaze-a.fc-max-filters", "64"])

    faces_a, faces_b = write_demo_faces(tmp_path / "demo", count=25, size=128, seed=5)
    assert train(["--config", str(out), "--faces-a", str(faces_a),
                  "--faces-b", str(faces_b), "--iterations", "3",
                  "--batch-size", "2", "--config.data.num-processes", "0",
                  "--config.train.save-interval", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Resuming 'phaze_a'" in printed and "at iteration 2" in printed
    assert "holds no optimizer state" not in printed
    assert "[Saved model] iteration 3" in printed
    state = json.loads((out / "phaze_a_state.json").read_text())
    assert state["iterations"] == 3 and state["sessions"]["2"]["iterations"] == 1


def test_a_faceswap_2_models_keras_optimizer_weights_are_imported(faceswap_dir, tmp_path,
                                                                   capsys):
    source = faceswap_dir / LEGACY
    folder = tmp_path / "faceswap"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.npz", "*_logs"))
    rng = np.random.default_rng(1)
    moments = {}
    with h5py.File(folder / "dfl_sae.h5", "a") as root:
        group = root.create_group("optimizer_weights")
        names = ["Adam/iter:0"]
        group.create_dataset("Adam/iter:0", data=np.int64(3))
        for sub in root["model_weights"].attrs["layer_names"]:
            for weight in root["model_weights"][sub].attrs.get("weight_names", []):
                layer, var = weight.rsplit("/", 1)
                var = var.removesuffix(":0")
                shape = root["model_weights"][sub][weight].shape
                m, v = rng.normal(size=shape), rng.uniform(size=shape)
                for slot, value in (("m", m), ("v", v)):
                    names.append(f"Adam/{layer}/{var}/{slot}:0")
                    group.create_dataset(names[-1], data=value.astype(np.float32))
                moments[(sub, layer, var)] = (m.astype(np.float32), v.astype(np.float32))
        group.attrs["weight_names"] = names
    out = tmp_path / "fsjax"
    assert import_keras.main([str(folder / "dfl_sae.h5"), "--out", str(out)]) == 0
    assert "Imported Faceswap's Adam state at optimizer step 3" in capsys.readouterr().out
    checkpoints = Checkpoints(out, "dfl_sae", writable=False)
    try:
        saved, _ = checkpoints.restore(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    finally:
        checkpoints.close()
    assert int(saved["step"]) == 3  # Faceswap's iteration count
    _check_moments(saved["opt_state"], moments, 3)


def test_an_optimizer_that_does_not_map_starts_afresh_and_says_why(faceswap_dir, tmp_path,
                                                                   capsys):
    source = faceswap_dir / PHAZE
    variables = [v for v in _manifest_variables(source) if v[4]]
    rng = np.random.default_rng(2)
    state = {i: {"step": np.array(2.0), "exp_avg": rng.normal(size=v[3]),
                 "exp_avg_var": rng.uniform(size=v[3])}
             for i, v in enumerate(variables)}  # AdaBelief's moments
    blob = torch_save({"version": 1.0, "optimizer": {"state": state, "param_groups": []},
                       "scaler": None})
    folder = _with_member(source, tmp_path / "faceswap", "optimizer.pt", blob)
    assert import_keras.main([str(folder), "--out", str(tmp_path / "fsjax")]) == 0
    printed = capsys.readouterr().out
    assert "was not imported (its per-parameter state holds ['exp_avg', 'exp_avg_var', " \
           "'step'], not Adam's" in printed and "the optimizer starts afresh" in printed
    checkpoints = Checkpoints(tmp_path / "fsjax", "phaze_a", writable=False)
    try:
        assert checkpoints.latest_step() == 2 and not checkpoints.has_optimizer(2)
    finally:
        checkpoints.close()


@pytest.mark.parametrize("payload", ["os_system", "not_a_zip"])
def test_a_hostile_optimizer_file_is_refused_and_never_run(faceswap_dir, tmp_path, capsys,
                                                           payload):
    marker = tmp_path / "ran"
    if payload == "os_system":
        import pickle

        class Boom:
            def __reduce__(self):
                return (__import__("os").system, (f"touch {marker}",))

        inner = torch_save({"version": 1.0})
        with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
            for name in zipfile.ZipFile(__import__("io").BytesIO(inner)).namelist():
                data = pickle.dumps(Boom(), protocol=2) if name.endswith("data.pkl") else b"3"
                archive.writestr(name, data)
        blob = (tmp_path / "evil.pt").read_bytes()
    else:
        blob = b"\x80\x02}q\x00."
    folder = _with_member(faceswap_dir / PHAZE, tmp_path / "faceswap", "optimizer.pt", blob)
    assert import_keras.main([str(folder), "--out", str(tmp_path / "fsjax")]) == 0
    printed = capsys.readouterr().out
    assert "was not imported" in printed and "optimizer.pt" in printed
    if payload == "os_system":
        assert "refused to load" in printed and "posix.system" in printed
    assert not marker.exists()


def test_the_import_refuses_a_folder_in_use_and_missing_files(faceswap_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "something").write_text("x")
    assert import_keras.main([str(faceswap_dir / PHAZE), "--out", str(out)]) == 1
    assert "must be empty or not exist" in capsys.readouterr().err
    assert import_keras.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_optimizer_moments_of_the_wrong_shape_are_refused_before_they_are_read(
        faceswap_dir, tmp_path):
    """A Faceswap 2 `optimizer_weights` whose first moment declares 16384 x 32768 float32 (2 GiB
    once read; 12 MiB stored, compressed): the moment's shape is compared with its weight's
    before it is read, so under a 2 GiB address-space limit the import says why the optimizer
    was not imported and writes the model with a fresh optimizer."""
    import subprocess
    import sys

    folder = tmp_path / "faceswap"
    shutil.copytree(faceswap_dir / LEGACY, folder, ignore=shutil.ignore_patterns("*.npz", "*_logs"))
    rng = np.random.default_rng(3)
    with h5py.File(folder / "dfl_sae.h5", "a") as root:
        group = root.create_group("optimizer_weights")
        names = ["Adam/iter:0"]
        group.create_dataset(names[0], data=np.int64(3))
        sub = root["model_weights/encoder_liae"]
        weight = sub.attrs["weight_names"][0]
        weight = weight.decode() if isinstance(weight, bytes) else weight
        layer, var = weight.removesuffix(":0").rsplit("/", 1)
        for slot in ("m", "v"):
            names.append(f"Adam/{layer}/{var}/{slot}:0")
            node = group.create_dataset(names[-1], shape=(16384, 32768), dtype="float32",
                                        chunks=(1024, 1024), compression="gzip")
            for i in range(3):
                node[i * 1024:(i + 1) * 1024, :1024] = rng.integers(
                    0, 2**32, (1024, 1024), dtype=np.uint32).view(np.float32)
        group.attrs["weight_names"] = names
        shape = tuple(sub[weight].shape)
    out = tmp_path / "fsjax"
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "from fsjax.tools.import_keras import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, str(folder / "dfl_sae.h5"), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (f"was not imported (its moment for encoder_liae/{layer}/{var} has shape "
            f"(16384, 32768); the weight is {shape}): the optimizer starts afresh") in done.stdout
    checkpoints = Checkpoints(out, "dfl_sae", writable=False)
    try:
        step = checkpoints.latest_step()
        assert step is not None and not checkpoints.has_optimizer(step)
    finally:
        checkpoints.close()
