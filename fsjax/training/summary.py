"""`--summary`: each sub-model's layers and parameter counts, like Keras' `model.summary()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fsjax.models import nesting
from fsjax.nn.precision import Policy


def param_tree(module: Any, input_size: int) -> dict[str, Any]:
    """Weight shapes of `module` without allocating them, as Keras counts weights: trainable
    parameters merged with BatchNorm's moving statistics (`batch_stats`), per sub-model and
    layer."""
    dummy = jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), dummy, dummy)
    return merge_collections(variables)


def merge_collections(variables: dict[str, Any]) -> dict[str, Any]:
    """`{"params": {sub: {layer: {...}}}, "batch_stats": {...}}` -> one `{sub: {layer: {...}}}`
    (a model nested in a sub-model listed by its layers, as Keras counts them)."""
    merged: dict[str, Any] = {}
    for collection in ("params", "batch_stats"):
        for sub, layers in nesting.flatten(variables.get(collection, {}))[0].items():
            for layer, weights in layers.items():
                merged.setdefault(sub, {}).setdefault(layer, {}).update(weights)
    return merged


def count(tree: Any) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


def print_summary(
    module: Any, name: str, input_size: int, out: Callable[[str], None] = print,
    policy: Policy | None = None,
) -> int:
    """Prints the precision policy and every sub-model's layers; returns the total parameter
    count."""
    params = param_tree(module, input_size)
    width = 60
    policy = Policy() if policy is None else policy
    out(f'Model: "{name}"')
    out(f"Precision policy: {policy.name} ({policy.describe()})")
    for sub_name, layers in params.items():
        out("=" * (width + 30))
        out(f'Sub-model: "{sub_name}"')
        out(f"{'Layer':<{width}}{'Weights':<20}{'Params':>10}")
        out("-" * (width + 30))
        for layer, weights in layers.items():
            shapes = " ".join("x".join(map(str, w.shape)) for w in weights.values())
            out(f"{layer:<{width}}{shapes:<20}{count(weights):>10,}")
        out(f"{'Sub-model params:':<{width + 20}}{count(layers):>10,}")
    total = count(params)
    out("=" * (width + 30))
    out(f"Total params: {total:,}")
    return total
