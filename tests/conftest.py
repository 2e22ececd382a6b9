"""Test setup: CPU only, 8 virtual devices, set before anything imports jax."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras is only a reference in tests
if "KERAS_HOME" not in os.environ:  # keep Keras from writing ~/.keras/keras.json
    import tempfile

    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="fsjax-keras-")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Many tests (and the command-line tests' subprocesses, which inherit this) compile the
    # same programs; XLA:CPU compiles are slow on small machines, so the run shares a cache.
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fsjax-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

import fsjax  # noqa: E402,F401  (marks absl flags parsed for grain workers)

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def faceswap_dir(tmp_path_factory) -> pathlib.Path:
    """Faceswap's own saved models, their recorded outputs and `models_manifest.json`, unpacked
    from tests/data/faceswap (see faceswap_files.py) and checked against their SHA-256."""
    from faceswap_files import unpack

    return unpack(tmp_path_factory.mktemp("faceswap"))


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Folder of the small fixture files copied from Faceswap's fixtures."""
    return DATA


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, path + "/"))
        else:
            out[path] = tuple(value.shape)
    return out


@pytest.fixture(scope="session")
def check_manifest():
    """`check_manifest(variant, config)`: builds the model of `config` (shapes only) and asserts
    that every sub-model, layer and weight shape equals Faceswap's manifest entry `variant`.
    Returns the total weight count."""
    import json

    import numpy as np

    from fsjax.models import get_model_module
    from fsjax.training.summary import param_tree

    manifest = json.loads((DATA / "manifest_models.json").read_text())

    def check(variant, config):
        spec = get_model_module(config.model.name).build(config)
        ours = _flat(param_tree(spec.module, spec.input_size))
        entry = manifest[variant]
        theirs = {f"{sub['name']}/{path}": tuple(shape)
                  for sub in entry["sub_models"] for path, shape in sub["weights"]}
        missing = sorted(set(theirs) - set(ours))
        extra = sorted(set(ours) - set(theirs))
        assert not missing and not extra, f"missing {missing[:10]}, extra {extra[:10]}"
        wrong = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        assert not wrong, f"shapes differ (ours, Faceswap's): {wrong}"
        total = sum(int(np.prod(s)) for s in ours.values())
        assert total == entry["total_params"]
        return total

    return check


@pytest.fixture
def tiny_loop(monkeypatch):
    """The real loop on `tiny_model` and one device (test_step covers eight)."""
    import types

    import jax
    from tiny_model import tiny_spec

    from fsjax.training import loop, sharding

    module = types.SimpleNamespace(
        build=lambda config: tiny_spec(config.model.name, config.model.dtype))
    monkeypatch.setattr(loop, "get_model_module", lambda name: module)
    make_mesh = sharding.make_mesh
    monkeypatch.setattr(sharding, "make_mesh",
                        lambda devices=None: make_mesh(devices or jax.devices()[:1]))
