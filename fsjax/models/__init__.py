"""Faceswap model plugins, one module each. `MODELS` maps the plugin name to its module path."""

import importlib
from types import ModuleType

MODELS: dict[str, str] = {
    "dfaker": "fsjax.models.dfaker",
    "dfl_h128": "fsjax.models.dfl_h128",
    "dfl_sae": "fsjax.models.dfl_sae",
    "dlight": "fsjax.models.dlight",
    "iae": "fsjax.models.iae",
    "lightweight": "fsjax.models.lightweight",
    "original": "fsjax.models.original",
    "phaze_a": "fsjax.models.phaze_a",
    "realface": "fsjax.models.realface",
    "unbalanced": "fsjax.models.unbalanced",
    "villain": "fsjax.models.villain",
}


def get_model_module(name: str) -> ModuleType:
    """Imports the module that implements Faceswap plugin `name`."""
    return importlib.import_module(MODELS[name])
