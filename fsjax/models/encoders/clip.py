"""Faceswap's CLIP vision transformers (`lib/model/networks/clip.py`) as Phaze-A's `clipv_*`
encoders.

Faceswap ports only the visual half of CLIP, as a Keras model named `visual`: a patch-embedding
conv (`visual_conv1`, stride = kernel = patch, no bias), the patch grid flattened to tokens, a
learned class token prepended and a learned positional embedding added (one row per token, so
the table's size follows the input size), `visual_ln_pre`, `layers` residual attention blocks
(pre-norm Keras MultiHeadAttention with width // 64 heads of 64, pre-norm MLP of 4 x width with
QuickGELU), `visual_ln_post` on the class token and a learned projection to `embed_dim`. Every
LayerNorm uses epsilon 1e-5. Phaze-A takes the whole model: the encoder output is the projected
class token, a (batch, embed_dim) vector, and the input is Phaze-A's [0, 1] face unchanged (no
CLIP mean/std normalisation).

Names are those of the first build in a process: Faceswap numbers the blocks with a class-level
counter (`visual_transformer_resblocks_0` ...) that Keras' `clear_session` does not reset. The
three embedding layers hold one bare `keras.Variable` each, auto-named `variable`, `variable_1`,
`variable_2` in a fresh session; Faceswap's weight files store them by position, not name. The
embeddings stay float32 under every precision policy (Faceswap builds them with
`dtype="float32"`); the layers that consume them cast to the compute dtype, as Keras' merge
layers do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsjax.models.encoders.mobilenet import AutoNames
from fsjax.nn import blocks, layers
from fsjax.nn.conv import Conv2D
from fsjax.nn.initializers import glorot_uniform
from fsjax.nn.normalization import LayerNormalization

Dtype = Any
KERAS_MODEL_NAME = "visual"
WEIGHTS_URL = "https://github.com/deepfakes-models/faceswap-models/releases/download"


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """One CLIP vision transformer: Faceswap's `MODEL_CONFIG` entry (`git_id` numbers the
    release that holds its weights)."""

    keras_name: str
    width: int
    layers: int
    patch: int
    embed_dim: int
    resolution: int
    git_id: int

    @property
    def heads(self) -> int:
        return self.width // 64


CONFIGS = {
    "clipv_farl-b-16-16": ViTConfig("FaRL-B-16-16", 768, 12, 16, 512, 224, 30),
    "clipv_farl-b-16-64": ViTConfig("FaRL-B-16-64", 768, 12, 16, 512, 224, 31),
    "clipv_vit-b-16": ViTConfig("ViT-B-16", 768, 12, 16, 512, 224, 26),
    "clipv_vit-b-32": ViTConfig("ViT-B-32", 768, 12, 32, 512, 224, 27),
    "clipv_vit-l-14": ViTConfig("ViT-L-14", 1024, 24, 14, 768, 224, 28),
    "clipv_vit-l-14-336px": ViTConfig("ViT-L-14-336px", 1024, 24, 14, 768, 336, 29),
}
ARCHS = tuple(CONFIGS)


def _check(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{arch!r} is not built by {__name__} (it builds {ARCHS})")


def scaled_normal(scale: float) -> Any:
    """`scale` times a standard normal (Faceswap's embeddings use width ** -0.5)."""
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return scale * jax.random.normal(key, shape, dtype)
    return init


class _Embedding(nn.Module):
    """A layer that is one float32 variable, `scale` times a standard normal at init, handed
    out per batch element (Faceswap's `EmbeddingLayer`); `variable` is its Keras name, `view`
    what the layer returns."""

    shape: tuple[int, ...]
    scale: float
    variable: str = "variable"

    def view(self, var: jax.Array, batch: int) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        var = self.param(self.variable, scaled_normal(self.scale), self.shape, jnp.float32)
        return self.view(var, x.shape[0])


class ClassEmbedding(_Embedding):
    """(width,) -> (batch, 1, width): the class token."""

    def view(self, var: jax.Array, batch: int) -> jax.Array:
        return jnp.broadcast_to(var[None, None], (batch, 1, *var.shape))


class PositionalEmbedding(_Embedding):
    """(tokens, width) -> (batch, tokens, width)."""

    def view(self, var: jax.Array, batch: int) -> jax.Array:
        return jnp.broadcast_to(var[None], (batch, *var.shape))


class Projection(_Embedding):
    """(width, embed_dim) -> (batch, embed_dim, width): transposed for the `Dot` that follows."""

    def view(self, var: jax.Array, batch: int) -> jax.Array:
        return jnp.broadcast_to(var.T[None], (batch, *var.T.shape))


class EinsumDense(nn.Module):
    """Keras' `EinsumDense` as MultiHeadAttention creates it: glorot-uniform kernel (Keras'
    fans for an N-d kernel are Flax's: last axis out, the one before in, the rest receptive
    field), zero bias."""

    equation: str
    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", glorot_uniform, self.kernel_shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, self.bias_shape, self.param_dtype)
        y = jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class MultiHeadAttention(nn.Module):
    """Keras' `MultiHeadAttention(num_heads, key_dim)` with biases, no dropout and no mask,
    called as (query, value, key). Weights nest as Keras paths them: `query`/`key`/`value`
    kernels (d, heads, key_dim) with biases (heads, key_dim), `attention_output` kernel
    (heads, key_dim, d) with bias (d,). Softmax runs in float32."""

    num_heads: int
    key_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query: jax.Array, value: jax.Array,
                 key: jax.Array | None = None) -> jax.Array:
        key = value if key is None else key
        h, k, kw = self.num_heads, self.key_dim, {"dtype": self.dtype,
                                                  "param_dtype": self.param_dtype}

        def project(x: jax.Array, name: str) -> jax.Array:
            return EinsumDense("btd,dnh->btnh", (x.shape[-1], h, k), (h, k), **kw, name=name)(x)

        q = project(query, "query") * jnp.asarray(k ** -0.5, self.dtype)
        kk = project(key, "key")
        v = project(value, "value")
        logits = jnp.einsum("btnh,bsnh->bnts", q, kk, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bnts,bsnh->btnh", weights, v)
        return EinsumDense("btnh,nhd->btd", (h, k, query.shape[-1]), (query.shape[-1],), **kw,
                           name="attention_output")(out)


def quick_gelu(x: jax.Array, name: str) -> jax.Array:
    """Faceswap's `QuickGELU` layer: x * sigmoid(1.702 x)."""
    return layers._done("QuickGELU", {}, name, [x], x * jax.nn.sigmoid(1.702 * x))


def get_item(x: jax.Array, name: str) -> jax.Array:
    """`x[:, 0, :]` on a Keras tensor: Keras records it as a `GetItem` operation."""
    return layers._done("GetItem", {"axis": 1, "index": 0}, name, [x], x[:, 0, :])


def dot(x: jax.Array, y: jax.Array, name: str) -> jax.Array:
    """Keras `Dot(axes=-1)` of (batch, n) with (batch, m, n): (batch, m)."""
    return layers._done("Dot", {"axes": -1, "normalize": False}, name, [x, y],
                        jnp.einsum("bn,bmn->bm", x, y))


def _layer_norm(x: jax.Array, name: str, opts: blocks.BlockOptions) -> jax.Array:
    return LayerNormalization(epsilon=1e-5, **opts.policy.layer_kwargs(), name=name)(x)


def _residual_block(x: jax.Array, heads: int, name: str, names: AutoNames,
                    opts: blocks.BlockOptions) -> jax.Array:
    width = x.shape[-1]
    y = _layer_norm(x, f"{name}_ln_1", opts)
    y = MultiHeadAttention(heads, width // heads, **opts.policy.layer_kwargs(),
                           name=f"{name}_attn")(y, y, y)
    x = layers.add([x, y], name=names("add"))
    y = _layer_norm(x, f"{name}_ln_2", opts)
    y = blocks.dense(y, width * 4, name=f"{name}_mlp_c_fc", opts=opts)
    y = quick_gelu(y, f"{name}_mlp_gelu")
    y = blocks.dense(y, width, name=f"{name}_mlp_c_proj", opts=opts)
    return layers.add([x, y], name=names("add"))


def vision_transformer(x: jax.Array, *, width: int, num_layers: int, heads: int, patch: int,
                       embed_dim: int, opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS,
                       name: str = KERAS_MODEL_NAME) -> jax.Array:
    """Faceswap's `VisualTransformer` on a square (batch, size, size, 3) input: the projected
    class token, (batch, embed_dim). The grid is size // patch (a 'valid' conv drops the rest)."""
    names = AutoNames()
    grid = x.shape[1] // patch
    x = Conv2D(width, patch, patch, "VALID", use_bias=False, kernel_init=glorot_uniform,
               **opts.policy.layer_kwargs(), name=f"{name}_conv1")(x)
    x = layers.reshape(x, (-1, width), name=names("reshape"))
    cls = ClassEmbedding((width,), width ** -0.5, name=f"{name}_class_embedding")(x)
    x = layers.concatenate([cls.astype(x.dtype), x], axis=1, name=names("concatenate"))
    pos = PositionalEmbedding((grid * grid + 1, width), width ** -0.5, "variable_1",
                              name=f"{name}_positional_embedding")(x)
    x = layers.add([x, pos.astype(x.dtype)], name=names("add"))
    x = _layer_norm(x, f"{name}_ln_pre", opts)
    for i in range(num_layers):
        x = _residual_block(x, heads, f"{name}_transformer_resblocks_{i}", names, opts)
    x = _layer_norm(get_item(x, names("get_item")), f"{name}_ln_post", opts)
    proj = Projection((width, embed_dim), width ** -0.5, "variable_2", name=f"{name}_proj")(x)
    return dot(x, proj.astype(x.dtype), names("dot"))


def build(x: jax.Array, arch: str, *,
          opts: blocks.BlockOptions = blocks.DEFAULT_OPTIONS) -> jax.Array:
    """Faceswap's `ViT(name, input_size)()` for `arch`, layers named as Faceswap's Keras model
    names them. Output: (batch, embed_dim)."""
    _check(arch)
    cfg = CONFIGS[arch]
    return vision_transformer(x, width=cfg.width, num_layers=cfg.layers, heads=cfg.heads,
                              patch=cfg.patch, embed_dim=cfg.embed_dim, opts=opts)


def keras_model_name(arch: str, **_: Any) -> str:
    """`visual` for every CLIP model (Phaze-A's freeze_layers relies on it)."""
    _check(arch)
    return KERAS_MODEL_NAME


def weights_file(arch: str, **_: Any) -> str:
    """Faceswap's weights file, `CLIPv_{name}_v1.h5`, kept in Faceswap's `.fs_cache` folder
    (not `~/.keras/models`). Faceswap loads it by position with `skip_mismatch=True`: at an
    input size other than the config's resolution the positional table does not fit and stays
    random."""
    _check(arch)
    return f"CLIPv_{CONFIGS[arch].keras_name}_v1.h5"


def weights_url(arch: str) -> str:
    """Where Faceswap's `GetModel` downloads the zip holding `weights_file(arch)`:
    release tag v{git_id}.{version}, asset `CLIPv_{name}_v1.zip`."""
    _check(arch)
    cfg = CONFIGS[arch]
    return f"{WEIGHTS_URL}/v{cfg.git_id}.1/CLIPv_{cfg.keras_name}_v1.zip"
