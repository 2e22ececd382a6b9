"""The Keras 3 graph (`config.json`) of a model fsjax built, so export can hand it to Faceswap.

A model imported from Faceswap carries its graph with it; one created in fsjax has only Flax
modules. `trace` runs the model abstractly (`jax.eval_shape`, nothing is computed) while a
recorder listens: Flax method interception reports every sub-model and every layer module
(Conv2D, Dense, BatchNormalization, ...), and `fsjax.nn.layers` reports the parameter-free layers
(LeakyReLU, PixelShuffler, Add, ...). Each becomes a Keras layer with Faceswap's name and the
tensors it was called on. `functional_config` then writes what Keras's `Functional.get_config`
writes: layers in Keras's own order (deepest first, ties in traversal order, `map_graph`),
inbound nodes, and input and output layers.

Layers that Faceswap left for Keras to name (`leaky_re_lu_3`, `input_layer_2`) are numbered per
class in Faceswap's build order: sub-models in the order the model declares them.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.interop.keras_layers import (
    BUILT,
    CALL_KWARGS,
    FACESWAP_LAYERS,
    MERGE_LAYERS,
    module_layer,
)
from fsjax.nn import layers


class GraphError(ValueError):
    """The model used an operation that has no Keras layer (it cannot be exported)."""


def snake_case(class_name: str) -> str:
    """Keras's auto-name base for a class (`LeakyReLU` -> `leaky_re_lu`)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclasses.dataclass(eq=False)
class Layer:
    """One Keras layer: class, class-specific config, name and one inbound node per call."""

    class_name: str
    config: dict[str, Any]
    name: str | None
    calls: list[list[tuple[Layer, int, int]]] = dataclasses.field(default_factory=list)
    in_shapes: list[list[tuple[int, ...]]] = dataclasses.field(default_factory=list)
    out_shapes: list[list[tuple[int, ...]]] = dataclasses.field(default_factory=list)
    listed: bool = False  # called on a list (merge layers, multi-input sub-models)
    module: str = "keras.layers"
    registered_name: str | None = None
    sub_graph: Graph | None = None  # a sub-model


@dataclasses.dataclass(eq=False)
class Graph:
    """One Keras Functional: the whole model or one sub-model."""

    name: str
    layers: list[Layer] = dataclasses.field(default_factory=list)
    inputs: list[tuple[Layer, int, int]] = dataclasses.field(default_factory=list)
    outputs: list[tuple[Layer, int, int]] = dataclasses.field(default_factory=list)
    list_outputs: bool = False
    tensors: dict[int, tuple[tuple[Layer, int, int], Any]] = dataclasses.field(
        default_factory=dict)
    frozen: bool = False  # a repeat call of a traced sub-model: record nothing inside

    def ref(self, array: Any) -> tuple[Layer, int, int]:
        found = self.tensors.get(id(array))
        if found is None or found[1] is not array:
            raise GraphError(f"{self.name}: a layer input ({getattr(array, 'shape', '?')}) was "
                             "computed by an operation that is not a Keras layer")
        return found[0]

    def add(self, layer: Layer, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        if layer not in self.layers:
            self.layers.append(layer)
        node = len(layer.calls)
        layer.calls.append([self.ref(x) for x in inputs])
        layer.in_shapes.append([tuple(x.shape) for x in inputs])
        layer.out_shapes.append([tuple(x.shape) for x in outputs])
        for i, out in enumerate(outputs):
            self.tensors[id(out)] = ((layer, node, i), out)


def _input_layer(graph: Graph, array: Any, name: str | None = None) -> None:
    layer = Layer("InputLayer", {"batch_shape": [None, *array.shape[1:]], "dtype": "float32",
                                 "sparse": False, "ragged": False}, name)
    graph.layers.append(layer)
    graph.inputs.append((layer, 0, 0))
    graph.tensors[id(array)] = ((layer, 0, 0), array)
    layer.out_shapes.append([tuple(array.shape)])


class Recorder:
    """Builds `Graph`s from the layer reports of one abstract forward pass."""

    def __init__(self) -> None:
        self.top = Graph("")
        self.stack: list[Graph] = [self.top]
        self.sub_models: dict[str, Layer] = {}

    def layer(self, class_name: str, config: dict[str, Any], name: str | None,
              inputs: Sequence[Any], output: Any, module: str = "keras.layers",
              registered: str | None = None) -> None:
        graph = self.stack[-1]
        if graph.frozen:
            return
        if class_name in FACESWAP_LAYERS:
            module, registered = FACESWAP_LAYERS[class_name], class_name
        listed = class_name in MERGE_LAYERS
        graph.add(Layer(class_name, dict(config), name, listed=listed, module=module,
                        registered_name=registered), inputs, [output])

    def intercept(self, next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
        m = context.module
        if context.method_name != "__call__" or not isinstance(m.parent, nn.Module):
            return next_fun(*args, **kwargs)
        found = module_layer(m)
        if found is not None:
            out = next_fun(*args, **kwargs)
            class_name, config, module, registered = found
            self.layer(class_name, config, m.name, [args[0]], out, module, registered)
            return out
        if isinstance(m.parent.parent, nn.Module) or len(self.stack) > 1:
            return next_fun(*args, **kwargs)  # a helper module inside a sub-model
        return self._sub_model(m.name, next_fun, args, kwargs)

    def _sub_model(self, name: str, next_fun: Any, args: tuple, kwargs: dict) -> Any:
        arrays = [a for a in args if hasattr(a, "shape")]
        layer = self.sub_models.get(name)
        if layer is None:
            graph = Graph(name)
            for array in arrays:
                _input_layer(graph, array)
            layer = Layer("Functional", {}, name, listed=len(arrays) > 1,
                          module="keras.src.models.functional", registered_name="Functional",
                          sub_graph=graph)
            self.sub_models[name] = layer
        else:
            graph = Graph(name, frozen=True)
        self.stack.append(graph)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            self.stack.pop()
        leaves = jax.tree.leaves(out)
        if not graph.frozen:
            graph.outputs = [graph.ref(x) for x in leaves]
            graph.list_outputs = not hasattr(out, "shape")
        self.top.add(layer, arrays, leaves)
        return out


def trace(module: nn.Module, input_size: int, name: str) -> Graph:
    """The Keras graph of `module` (a model's root: `apply(variables, face_a, face_b)`)."""
    recorder = Recorder()
    face = jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32)

    def run(face_a: Any, face_b: Any) -> Any:
        for array, side in ((face_a, "a"), (face_b, "b")):
            _input_layer(recorder.top, array, f"face_in_{side}")
        with layers.recording(recorder), nn.intercept_methods(recorder.intercept):
            key = jax.random.key(0)
            out, _ = module.init_with_output({"params": key, "dropout": key}, face_a, face_b)
        recorder.top.outputs = [recorder.top.ref(x) for x in jax.tree.leaves(out)]
        return None

    jax.eval_shape(run, face, face)
    graph = recorder.top
    graph.name = name
    graph.list_outputs = True
    _name_layers(graph, _declared_order(module, recorder))
    return graph


def _declared_order(module: nn.Module, recorder: Recorder) -> list[str]:
    fields = [f.name for f in dataclasses.fields(module)
              if isinstance(getattr(module, f.name, None), nn.Module)]
    order = getattr(module, "keras_build_order", None) or fields
    return [n for n in order if n in recorder.sub_models] + [
        n for n in recorder.sub_models if n not in order]


def _name_layers(top: Graph, order: list[str]) -> None:
    """Keras's auto names (`<snake_case class>[_n]`) for unnamed layers, in build order."""
    graphs = [top.layers[[layer.name for layer in top.layers].index(n)].sub_graph
              for n in order] + [top]
    taken = {layer.name for g in graphs for layer in g.layers if layer.name is not None}
    counts: collections.Counter[str] = collections.Counter()
    for graph in graphs:
        for layer in graph.layers:
            if layer.name is not None:
                continue
            base = snake_case(layer.class_name)
            while True:
                n = counts[base]
                counts[base] += 1
                candidate = base if n == 0 else f"{base}_{n}"
                if candidate not in taken:
                    break
            layer.name = candidate
            taken.add(candidate)


def keras_order(graph: Graph) -> list[Layer]:
    """`Functional.layers` order: Keras's `map_graph` (depth from the outputs, deepest first;
    ties in the order a depth-first walk from the outputs first reaches them)."""
    indices: dict[Layer, int] = {}
    finished: set[tuple[Layer, int]] = set()
    in_decreasing_depth: list[tuple[Layer, int]] = []

    def visit(ref: tuple[Layer, int, int]) -> None:
        layer, node, _ = ref
        if (layer, node) in finished:
            return
        indices.setdefault(layer, len(indices))
        if layer.class_name != "InputLayer":
            for parent in layer.calls[node]:
                visit(parent)
        finished.add((layer, node))
        in_decreasing_depth.append((layer, node))

    for ref in graph.outputs:
        visit(ref)
    node_depth: dict[tuple[Layer, int], int] = {}
    layer_depth: dict[Layer, int] = {}
    for key in reversed(in_decreasing_depth):
        depth = max(node_depth.setdefault(key, 0), layer_depth.get(key[0], 0))
        layer_depth[key[0]] = node_depth[key] = depth
        if key[0].class_name != "InputLayer":
            for parent, pnode, _ in key[0].calls[key[1]]:
                node_depth[(parent, pnode)] = max(depth + 1, node_depth.get((parent, pnode), 0))
    for layer, _, _ in graph.inputs:
        if layer not in layer_depth:
            layer_depth[layer], indices[layer] = 0, -1
    return sorted(layer_depth, key=lambda layer: (-layer_depth[layer], indices[layer]))


_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
           "registered_name": None}


def _tensor(ref: tuple[Layer, int, int], shape: tuple[int, ...]) -> dict[str, Any]:
    layer, node, index = ref
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None, *shape[1:]], "dtype": "float32",
                       "keras_history": [layer.name, node, index]}}


def _shape(shape: tuple[int, ...]) -> list[Any]:
    return [None, *shape[1:]]


def layer_config(layer: Layer) -> dict[str, Any]:
    """One entry of a Functional's `layers`, as Keras 3 serialises it."""
    if layer.class_name == "InputLayer":
        config = {**layer.config, "name": layer.name, "optional": False}
        return {"module": "keras.layers", "class_name": "InputLayer", "config": config,
                "registered_name": None, "name": layer.name, "inbound_nodes": []}
    nodes = []
    for refs, shapes in zip(layer.calls, layer.in_shapes, strict=True):
        tensors = [_tensor(r, s) for r, s in zip(refs, shapes, strict=True)]
        args = [tensors] if layer.listed else tensors
        kwargs: dict[str, Any] = dict(CALL_KWARGS.get(layer.class_name, {}))
        if layer.sub_graph is not None:
            kwargs = {"mask": [None] * len(tensors) if layer.listed else None}
        nodes.append({"args": args, "kwargs": kwargs})
    if layer.sub_graph is not None:
        return {"module": layer.module, "class_name": "Functional",
                "config": functional_config(layer.sub_graph), "registered_name": "Functional",
                "build_config": {"input_shape": None}, "compile_config": {}, "name": layer.name,
                "inbound_nodes": nodes}
    config = {"name": layer.name, "trainable": True, "dtype": dict(_POLICY), **layer.config}
    if layer.class_name == "SpatialDropout2D":  # its config has only these (Keras 3)
        config = {"rate": layer.config["rate"], "seed": None, "name": layer.name,
                  "data_format": "channels_last"}
    entry: dict[str, Any] = {"module": layer.module, "class_name": layer.class_name,
                             "config": config, "registered_name": layer.registered_name}
    if layer.class_name in BUILT:
        shapes = [_shape(s) for s in layer.in_shapes[0]]
        entry["build_config"] = {"input_shape": shapes if layer.listed else shapes[0]}
    entry["name"] = layer.name
    entry["inbound_nodes"] = nodes
    return entry


def _io(refs: list[tuple[Layer, int, int]], as_list: bool, top: bool) -> Any:
    out = [[layer.name, node + (1 if top and layer.sub_graph is not None else 0), index]
           for layer, node, index in refs]
    return out if as_list or len(out) != 1 else out[0]


def functional_config(graph: Graph) -> dict[str, Any]:
    """The `config` of a Functional (the whole model or one sub-model)."""
    top = any(layer.sub_graph is not None for layer in graph.layers)
    return {"name": graph.name, "trainable": True,
            "layers": [layer_config(layer) for layer in keras_order(graph)],
            "input_layers": _io(graph.inputs, top or len(graph.inputs) > 1, False),
            "output_layers": _io(graph.outputs, graph.list_outputs, top)}


def model_config(graph: Graph) -> dict[str, Any]:
    """The whole `config.json` of a `.keras` file for the traced model."""
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": functional_config(graph), "registered_name": "Functional",
            "build_config": {"input_shape": None}, "compile_config": {}}
