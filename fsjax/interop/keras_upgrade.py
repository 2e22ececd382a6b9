"""A Faceswap 2 (tf.keras 2) model config rewritten so that Keras 3 builds it (data.md §6.3).

These are the rewrites Faceswap 3's own updater makes before `Model.from_config`; the result is
the graph a Faceswap 3 `.keras` file of that model carries:

* nested `output_layers` (one list per side in multi-output models) become one flat list;
* Keras 2 numbered a functional sub-model's calls from 1 (node 0 was its own construction), Keras 3
  from 0, so references to a sub-model's call `k > 0` become `k - 1`;
* `LeakyReLU.alpha` is `negative_slope`; `groups` leaves DepthwiseConv2D, SeparableConv2D and
  Conv2DTranspose, and SeparableConv2D's single kernel initializer, regularizer and constraint go
  (Keras 3 has one per kernel);
* a dtype given as a string or a legacy `Policy` becomes a Keras 3 `DTypePolicy`;
* functional models name their module, which a `.keras` file's loader needs for the top model.

Code-carrying layers (`TFOpLambda`) are refused by `keras_file.check_config` before this runs.
"""

from __future__ import annotations

import copy
from typing import Any

_NO_GROUPS = ("DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
_MODELS = ("Functional", "Model")
_FUNCTIONAL = "keras.src.models.functional"


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """The whole `model_config` (`{"class_name": "Functional", "config": ...}`) for Keras 3."""
    config = copy.deepcopy(config)
    models = set(_model_names(config))
    _rewrite(config, models)
    config.setdefault("module", _FUNCTIONAL)  # a .keras's top model must name its module
    config.setdefault("registered_name", None)
    return config


def _model_names(layer: dict[str, Any]):
    for child in layer.get("config", {}).get("layers", []):
        if child.get("class_name") in _MODELS:
            yield child["config"]["name"]
            yield from _model_names(child)


def _rewrite(model: dict[str, Any], models: set[str]) -> None:
    conf = model["config"]
    outputs = conf.get("output_layers")
    if outputs and all(isinstance(o, list) and o and isinstance(o[0], list) for o in outputs):
        conf["output_layers"] = [item for group in outputs for item in group]
    for layer in conf.get("layers", []):
        for node in layer.get("inbound_nodes", []):
            for item in node if isinstance(node, list) else []:
                if item[0] in models and item[1] > 0:
                    item[1] -= 1
        cls, lconf = layer.get("class_name"), layer.get("config", {})
        if cls == "LeakyReLU" and "alpha" in lconf:
            lconf["negative_slope"] = lconf.pop("alpha")
        if cls in _NO_GROUPS:
            lconf.pop("groups", None)
        if cls == "SeparableConv2D":
            for key in ("kernel_initializer", "kernel_regularizer", "kernel_constraint"):
                lconf.pop(key, None)
        lconf["dtype"] = dtype_policy(lconf.get("dtype"))
        if lconf["dtype"] is None:
            lconf.pop("dtype")
        if cls in _MODELS:
            layer.setdefault("module", _FUNCTIONAL)
            _rewrite(layer, models)


def dtype_policy(dtype: Any) -> Any:
    """A layer dtype as Keras 3 serialises it (a `DTypePolicy`), from a name or a legacy Policy."""
    if isinstance(dtype, str):
        return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype},
                "registered_name": None}
    if isinstance(dtype, dict) and dtype.get("class_name") == "Policy":
        name = dtype.get("config", {}).get("name", "float32")
        return dtype_policy(name)
    return dtype
