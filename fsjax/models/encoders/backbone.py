"""A pretrained network inside Phaze-A's `encoder`, as Faceswap nests it.

Faceswap's encoder is `Input -> input scaling -> <Keras-Applications model> -> [bottleneck]`;
the Keras model is a sub-model of `encoder` named as Keras names it (`efficientnetb0`,
`mobilenetv2_1.00_64`, CLIP's `visual`). `Backbone` is that sub-model: its parameters sit at
`params["encoder"][<model name>][<layer>]`, so Faceswap's saved files and Keras' weight files map
by name and `freeze_layers` can name it (`keras_encoder`).

A frozen backbone runs its BatchNorms in inference mode, as Keras does for a layer with
`trainable=False`: it neither uses nor updates batch statistics.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models import encoders
from fsjax.nn import blocks, layers


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What Phaze-A builds for `enc_architecture` = `arch` (hashable: a Flax module field)."""

    arch: str
    model_name: str
    """The Keras model's name: the sub-model's name in `params["encoder"]`."""
    options: tuple[tuple[str, Any], ...] = ()
    """Keyword options of the family's `build` (width, preprocessing, ImageNet front...)."""
    weights_file: str = ""
    """The file name Keras (or Faceswap, for CLIP) keeps these weights under."""
    size: int = 0
    """The input size it is built for."""

    @property
    def scaling(self) -> tuple[int, int]:
        return encoders.ENCODERS[self.arch].scaling


def _accepted(fn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options `fn` takes (a family ignores the ones it has no use for)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def plan(arch: str, size: int, *, load_weights: bool, mobilenet_width: float = 1.0,
         mobilenet_depth: int = 1, mobilenet_minimalistic: bool = False,
         faceswap_compat: bool = False) -> BackboneSpec:
    """The backbone Faceswap's Phaze-A builds for `arch` at `size` px.

    Faceswap passes the MobileNet options, EfficientNet-v1's ImageNet front when it loads weights
    (Keras adds a Rescaling layer for `weights="imagenet"`) and `include_preprocessing=False` for
    EfficientNetV2. For MobileNetV3 its option lookup misses (keyed `mobilenet_v3`, not the
    architecture names), so Faceswap builds V3 at width 1 with Keras' own 0..255 preprocessing
    behind its (-1, 1) input scaling, which squeezes the input into a 1/127 wide range: fsjax
    applies the width and minimalistic options and leaves the preprocessing out (what Faceswap's
    code and reference intend); `faceswap_compat` builds what Faceswap builds. The weights are
    the same in both (the Rescaling layer has none)."""
    module = encoders.family(arch)
    options: dict[str, Any] = {}
    if arch == "mobilenet":
        options = {"alpha": mobilenet_width, "depth_multiplier": mobilenet_depth}
    elif arch == "mobilenet_v2":
        options = {"alpha": mobilenet_width}
    elif arch.startswith("mobilenet_v3"):
        options = ({"include_preprocessing": True} if faceswap_compat else
                   {"alpha": mobilenet_width, "minimalistic": mobilenet_minimalistic,
                    "include_preprocessing": False})
    elif arch.startswith("efficientnet_v2"):
        options = {"include_preprocessing": False}
    elif arch.startswith("efficientnet_"):
        options = {"imagenet": load_weights}
    options = _accepted(module.build, options)
    naming = {"size": size, "load_weights": load_weights, **options}
    name = module.keras_model_name(arch, **_accepted(module.keras_model_name, naming))
    file = module.weights_file(arch, **_accepted(module.weights_file, naming))
    return BackboneSpec(arch, name, tuple(sorted(options.items())), file, size)


def scale_input(x: jax.Array, scaling: tuple[int, int]) -> jax.Array:
    """Faceswap's input scaling from the face's 0..1 range into the network's range."""
    if scaling == (0, 255):
        return x * jnp.asarray(255.0, x.dtype)
    if scaling == (-1, 1):
        return x * jnp.asarray(2.0, x.dtype) - jnp.asarray(1.0, x.dtype)
    return x


class Backbone(nn.Module):
    """The pretrained network as a sub-model of `encoder` (name: `spec.model_name`)."""

    spec: BackboneSpec
    opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS
    frozen: bool = False
    """Trained with `freeze_weights`: BatchNorm on its moving statistics, never updated."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.frozen and not self.is_initializing():
            return nn.map_variables(Backbone._build, "batch_stats", mutable=False)(self, x)
        return self._build(x)

    def _build(self, x: jax.Array) -> jax.Array:
        module = encoders.family(self.spec.arch)
        return module.build(x, self.spec.arch, opts=self.opts, **dict(self.spec.options))


class _Names:
    def __init__(self) -> None:
        self.names: list[str] = []

    def layer(self, class_name: str, config: dict[str, Any], name: str | None,
              inputs: Any, output: Any) -> None:
        if name:
            self.names.append(name)


def describe(spec: BackboneSpec, size: int) -> tuple[tuple[int, ...], list[str]]:
    """The backbone's feature-map shape (no batch axis) and every layer name in it (with and
    without weights: Keras' automatic names after it continue from them), from one abstract
    trace (nothing is computed)."""
    recorder = _Names()

    def run(x: jax.Array) -> tuple[jax.Array, Any]:
        return Backbone(spec).init_with_output(jax.random.key(0), x)

    with layers.recording(recorder):
        out, variables = jax.eval_shape(run, jax.ShapeDtypeStruct((1, size, size, 3),
                                                                  jnp.float32))
    for tree in variables.values():
        recorder.names.extend(tree)
    return tuple(out.shape[1:]), recorder.names


def weighted_layers(spec: BackboneSpec, size: int) -> list[str]:
    """The backbone's layers with weights in the order they are called, which for CLIP's chain
    of layers is Keras' `model.layers` order (what a by-position weight load follows)."""
    order: list[str] = []
    root: list[tuple[str, ...]] = []

    def record(next_fun, args, kwargs, context):
        path = context.module.scope.path if context.module.scope else ()
        if isinstance(context.module, Backbone):
            root.append(path)
        elif root and path[:-1] == root[0] and path[-1] not in order:
            order.append(path[-1])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(Backbone(spec).init, jax.random.key(0),
                                   jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    held = set(variables.get("params", {})) | set(variables.get("batch_stats", {}))
    return [name for name in order if name in held]


def freeze_path(spec: BackboneSpec | None, compat: bool) -> tuple[str, str]:
    """`(path, unmatched)`: what `keras_encoder` freezes, and with `compat` Faceswap's name for
    the network where it matches no sub-model (then nothing is frozen).

    Faceswap swaps in the Keras-Applications function's name ("EfficientNetV2-" for V2,
    "visual" for CLIP) and freezes the sub-model of exactly that name, which for most networks
    differs in case from the model's (`efficientnetb0`), so it freezes nothing: fsjax freezes
    the network; `faceswap_compat` reproduces Faceswap."""
    if spec is None:
        return "", ""
    path = f"encoder/{spec.model_name}"
    if not compat:
        return path, ""
    arch = spec.arch
    name = "visual" if arch.startswith("clipv_") else (
        encoders.ENCODERS[arch].keras_name.replace("EfficientNetV2", "EfficientNetV2-"))
    return (path, "") if name == spec.model_name else ("", f"encoder/{name}")
