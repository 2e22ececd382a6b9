"""Resume onto a changed optimizer: saved arrays are matched to a fresh state by name and shape.

Changeable options (clipping, accumulation, frozen sub-models, AutoClip's history, whether the
optimizer state was saved at all) change the optimizer state's structure between sessions.
Rather than restoring onto the old structure and hoping it still fits, fsjax restores what the
checkpoint holds and takes, for every array of a freshly built state, the saved array of the same
name and shape; the rest start fresh and are reported. Model weights must all match: a missing
or reshaped weight is an error naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

# optax.MultiSteps nests the whole optimizer under this key; the moments inside are the same
# arrays whether or not gradients are accumulated, so names are compared without it.
_ACCUMULATION_WRAPPER = "inner_opt_state."


def leaf_names(tree: Any) -> dict[str, Any]:
    """Dotted names (`opt_state.optimizer.inner_state.0.mu.encoder...`) -> leaves, the way orbax
    names saved arrays; empty optimizer states have no leaves."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path, simple=True, separator="."): leaf for path, leaf in flat}


def canonical(name: str) -> str:
    return name.replace(_ACCUMULATION_WRAPPER, "")


@dataclasses.dataclass
class GraftReport:
    """What a resume kept from the checkpoint and what started fresh."""

    kept: int = 0
    kept_optimizer: bool = False
    fresh: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str | None:
        """One line for the console, or None when the optimizer state resumed unchanged."""
        if not self.fresh and not self.dropped:
            return None
        parts = [f"kept {self.kept} saved arrays"]
        if self.fresh:
            parts.append(f"started {len(self.fresh)} fresh ({_sample(self.fresh)})")
        if self.dropped:
            parts.append(f"left {len(self.dropped)} unused ({_sample(self.dropped)})")
        return "Optimizer state changed with the options: " + ", ".join(parts)


def _sample(names: list[str], n: int = 3) -> str:
    more = f", ... {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


class GraftError(ValueError):
    """The checkpoint does not hold this model's weights."""


def graft(fresh: Any, saved: Any, *, required: tuple[str, ...] = ("params.", "model_state."),
          ) -> tuple[Any, GraftReport]:
    """Returns `fresh` with every leaf replaced by the saved leaf of the same (canonical) name,
    shape and dtype. Leaves under `required` prefixes must all be found."""
    saved_leaves = {canonical(k): v for k, v in leaf_names(saved).items()}
    fresh_named = leaf_names(fresh)
    report = GraftReport()
    used = set()
    out = []
    for name, leaf in fresh_named.items():
        key = canonical(name)
        old = saved_leaves.get(key)
        matches = (old is not None and tuple(np.shape(old)) == tuple(leaf.shape)
                   and np.dtype(old.dtype) == np.dtype(leaf.dtype))
        if not matches and name.startswith(required):
            found = "missing" if old is None else f"shape {tuple(np.shape(old))} {old.dtype}"
            raise GraftError(f"the checkpoint's weight {name} is {found}; this model needs "
                             f"shape {tuple(leaf.shape)} {leaf.dtype}")
        if matches:
            used.add(key)
            report.kept += 1
            report.kept_optimizer |= name.startswith("opt_state.")
            out.append(old)
        else:
            report.fresh.append(name)
            out.append(leaf)
    report.dropped = sorted(k for k in saved_leaves if k not in used)
    treedef = jax.tree_util.tree_structure(fresh)
    return jax.tree_util.tree_unflatten(treedef, out), report
