"""Test setup: CPU only, 8 virtual devices, set before anything imports jax."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

import fsjax  # noqa: E402,F401  (marks absl flags parsed for grain workers)

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Folder of the small fixture files copied from ../shared/fixtures."""
    return DATA
