"""The restricted `.pth` reader (`fsjax.interop.torch_file`): torch's zip archive and its
pre-1.6 stream, written here by `torch_save.write_pth`; anything but tensors is refused unread."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from torch_save import _global, _layout, _state_pickle, _str, write_pth

from fsjax.interop import torch_file


def _attack(module: str, name: str, marker) -> bytes:
    return (b"\x80\x02" + _global(module, name) + b"(" + _str(f"touch {marker}") + b"tR.")


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"),
                                         ("builtins", "eval"), ("torch", "load"),
                                         ("collections", "defaultdict")])
def test_reader_refuses_other_globals(tmp_path, module, name, legacy):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    write_pth(path, {"w": np.ones(2)}, legacy=legacy, state=_attack(module, name, marker))
    with pytest.raises(torch_file.TorchFileError) as err:
        torch_file.read_state_dict(path)
    assert f"{module}.{name}" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


def test_reader_refuses_global_inside_header(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(_attack("os", "system", marker))
    with pytest.raises(torch_file.TorchFileError, match="os.system"):
        torch_file.read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_reader_layouts(tmp_path, legacy):
    """Offsets, column-major strides, 0-d tensors and selective reads come out right."""
    rng = np.random.default_rng(3)
    tensors = {"a": rng.normal(size=(2, 3, 4)), "b": rng.normal(size=(5, 3)),
               "c": np.array(2.5), "d": rng.normal(size=(4,))}
    path = tmp_path / "t.pth"
    write_pth(path, tensors, legacy=legacy)
    out = torch_file.read_state_dict(path)
    assert list(out) == list(tensors)
    for key, value in tensors.items():
        assert out[key].dtype == np.float32 and out[key].flags.c_contiguous
        np.testing.assert_array_equal(out[key], value.astype(np.float32))
    assert list(torch_file.read_state_dict(path, ["d", "b"])) == ["d", "b"]
    with pytest.raises(torch_file.TorchFileError, match="lacks the tensors e"):
        torch_file.read_state_dict(path, ["e"])


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_reader_half_storages(tmp_path, dtype):
    value = np.random.default_rng(6).normal(size=(3, 2, 2)).astype(dtype)
    path = tmp_path / "h.pth"
    write_pth(path, {"w": value}, dtype=dtype)
    out = torch_file.read_state_dict(path)["w"]
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out.astype(np.float32), value.astype(np.float32))


def test_reader_limits(tmp_path):
    path = tmp_path / "t.pth"
    write_pth(path, {"a": np.ones((3, 3))})
    with pytest.raises(torch_file.TorchFileError, match="limit"):
        torch_file.read_state_dict(path, max_file_bytes=100)
    with pytest.raises(torch_file.TorchFileError, match="pickle"):
        torch_file.read_state_dict(path, max_pickle_bytes=20)
    # A view that runs past its storage is refused, not read out of bounds.
    entries, storages = _layout({"a": np.ones(4)})
    entries["a"].shape = (400,)
    bad = _state_pickle(entries, {k: v.size for k, v in storages.items()}, legacy=False)
    write_pth(path, {"a": np.ones(4)}, state=bad)
    with pytest.raises(torch_file.TorchFileError, match="elements than storage"):
        torch_file.read_state_dict(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(torch_file.TorchFileError, match="neither a zip"):
        torch_file.read_state_dict(path)
