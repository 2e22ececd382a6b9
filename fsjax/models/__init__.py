"""Faceswap model plugins, one module each. `MODELS` maps the plugin name to its module path."""

import importlib
from types import ModuleType

MODELS: dict[str, str] = {
    "original": "fsjax.models.original",
}


def get_model_module(name: str) -> ModuleType:
    """Imports the module that implements Faceswap plugin `name`."""
    return importlib.import_module(MODELS[name])
