"""Faceswap model plugins, one module each. `MODELS` maps the plugin name to its module path."""

import importlib
from types import ModuleType

from fsjax.config.plugins import MODEL_PLUGINS

MODELS: dict[str, str] = {name: f"fsjax.models.{name}" for name in MODEL_PLUGINS}


def get_model_module(name: str) -> ModuleType:
    """Imports the module that implements Faceswap plugin `name`."""
    return importlib.import_module(MODELS[name])
