"""Models nested in a sub-model (Phaze-A's pretrained network inside `encoder`), seen flat.

fsjax keeps a nested Keras model as a nested Flax module, so its variables sit one level deeper:
`params["encoder"]["efficientnetb0"]["stem_conv"]`. Faceswap's files and the interop code name a
weight by sub-model and layer alone (Keras layer names are unique within a sub-model, nested
models included), so `flatten` lifts nested layers into their sub-model and `unflatten` puts a
flat tree back in the model's shape.
"""

from __future__ import annotations

from typing import Any

Paths = dict[str, dict[str, tuple[str, ...]]]
"""`{sub-model: {layer: keys from the sub-model down to the layer}}`."""


def _is_layer(node: Any) -> bool:
    return isinstance(node, dict) and not any(isinstance(v, dict) for v in node.values())


def _walk(tree: dict[str, Any]):
    """A sub-model's layers: its own, and those of the models nested in it (one level: the
    children of a nested model are its layers, whatever they hold, e.g. an attention layer's
    `query` / `key` / `value` weights)."""
    for key, node in dict(tree).items():
        node = dict(node) if hasattr(node, "items") else node
        if _is_layer(node):
            yield (key,), node
        else:
            for layer, leaves in node.items():
                yield (key, layer), dict(leaves) if hasattr(leaves, "items") else leaves


def flatten(tree: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], Paths]:
    """`{sub: {layer: vars}}` with nested models' layers lifted, and where each layer was."""
    flat: dict[str, dict[str, Any]] = {}
    paths: Paths = {}
    for sub, layers in dict(tree).items():
        flat[sub], paths[sub] = {}, {}
        for path, leaves in _walk(layers):
            layer = path[-1]
            if layer in flat[sub]:
                raise ValueError(f"{sub}: two layers named {layer!r} "
                                 f"({'/'.join(paths[sub][layer])} and {'/'.join(path)})")
            flat[sub][layer], paths[sub][layer] = leaves, path
    return flat, paths


def unflatten(flat: dict[str, dict[str, Any]], paths: Paths) -> dict[str, Any]:
    """The flat tree in the nested shape `paths` recorded (layers it lacks stay absent)."""
    out: dict[str, Any] = {}
    for sub, layers in flat.items():
        node = out.setdefault(sub, {})
        for layer, leaves in layers.items():
            target = node
            for key in paths.get(sub, {}).get(layer, (layer,))[:-1]:
                target = target.setdefault(key, {})
            target[layer] = leaves
    return out
