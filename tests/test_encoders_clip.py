"""fsjax's CLIP encoders (Faceswap's `visual` vision transformer) against a Keras 3 reference.

Keras Applications has no CLIP, so the reference is written here from the architecture (JAX
backend, Keras' own MultiHeadAttention / LayerNormalization / Dense / Dot, small custom layers
for the learned tables and QuickGELU), with Faceswap's layer names and the names Keras gives the
unnamed ones in a fresh session. `check_against_keras` then compares layers, parameter count
and inference output; its weight pairing is made path-aware here, because a MultiHeadAttention
holds four `kernel`/`bias` pairs (`query/kernel`, ...) that fsjax nests the same way. The
full-size configs are counted against the closed-form formula and CLIP's published sizes.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import keras_encoders  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import traverse_util  # noqa: E402
from keras import ops  # noqa: E402
from keras_encoders import Wrapped, check_against_keras, check_names, param_count  # noqa: E402

from fsjax.models.encoders import ENCODERS, family, input_size  # noqa: E402
from fsjax.nn import blocks  # noqa: E402
from fsjax.nn.precision import Policy  # noqa: E402

clip = family("clipv_vit-b-32")
SMALL = {"width": 128, "num_layers": 2, "heads": 2, "patch": 8, "embed_dim": 64}
"""A small transformer of the same shape rules (heads of 64): 32 px -> a 4x4 grid, 17 tokens."""


# ---------------------------------------------------------------- the Keras reference

class _Table(keras.layers.Layer):
    """A learned table (normal, stddev `scale`) returned once per sample of its input's batch;
    float32 whatever the policy, as Faceswap builds these layers."""

    def __init__(self, shape, scale, weight_name, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.table_shape, self.scale, self.weight_name = tuple(shape), scale, weight_name

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=self.table_shape, name=self.weight_name,
            initializer=keras.initializers.RandomNormal(stddev=self.scale))

    def call(self, inputs):
        return self.per_sample(self.table, ops.shape(inputs)[0])


class ClassEmbedding(_Table):
    def per_sample(self, table, n):
        return ops.broadcast_to(table[None, None, :], (n, 1, table.shape[0]))


class PositionalEmbedding(_Table):
    def per_sample(self, table, n):
        return ops.broadcast_to(table[None], (n, *table.shape))


class Projection(_Table):
    def per_sample(self, table, n):
        flipped = ops.transpose(table)
        return ops.broadcast_to(flipped[None], (n, *flipped.shape))


class QuickGELU(keras.layers.Layer):
    def call(self, inputs):
        return inputs * ops.sigmoid(1.702 * inputs)


def reference(size, width, num_layers, heads, patch, embed_dim):
    """The `visual` model, written from CLIP's vision transformer with Faceswap's names."""
    keras.backend.clear_session()
    norm = lambda name: keras.layers.LayerNormalization(epsilon=1e-5, name=name)  # noqa: E731
    image = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(width, patch, strides=patch, use_bias=False,
                            name="visual_conv1")(image)
    x = keras.layers.Reshape((-1, width))(x)
    tokens = (size // patch) ** 2 + 1
    first = ClassEmbedding((width,), width ** -0.5, "variable", name="visual_class_embedding")
    x = keras.layers.Concatenate(axis=1)([first(x), x])
    where = PositionalEmbedding((tokens, width), width ** -0.5, "variable_1",
                                name="visual_positional_embedding")
    x = keras.layers.Add()([x, where(x)])
    x = norm("visual_ln_pre")(x)
    for i in range(num_layers):
        block = f"visual_transformer_resblocks_{i}"
        y = norm(f"{block}_ln_1")(x)
        y = keras.layers.MultiHeadAttention(heads, width // heads, name=f"{block}_attn")(y, y, y)
        x = keras.layers.Add()([x, y])
        y = norm(f"{block}_ln_2")(x)
        y = keras.layers.Dense(4 * width, name=f"{block}_mlp_c_fc")(y)
        y = QuickGELU(name=f"{block}_mlp_gelu")(y)
        y = keras.layers.Dense(width, name=f"{block}_mlp_c_proj")(y)
        x = keras.layers.Add()([x, y])
    x = norm("visual_ln_post")(x[:, 0, :])
    out = Projection((width, embed_dim), width ** -0.5, "variable_2", name="visual_proj")(x)
    return keras.Model(image, keras.layers.Dot(axes=-1)([x, out]), name="visual")


def reference_for(arch, size):
    cfg = clip.CONFIGS[arch]
    return reference(size, cfg.width, cfg.layers, cfg.heads, cfg.patch, cfg.embed_dim)


# ---------------------------------------------------------------- path-aware weight pairing

def _weights_by_path(model):
    """{layer: {path inside the layer ("kernel", "query/kernel"): array}}."""
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            assert w.path.startswith(f"{layer.name}/"), (layer.name, w.path)
            out.setdefault(layer.name, {})[w.path[len(layer.name) + 1:]] = np.asarray(w.numpy())
    return out


_place = keras_encoders.fsjax_variables


def _place_nested(weights, abstract):
    """`fsjax_variables` over nested layers: flattened to "query/kernel" and back."""
    flat = {c: {layer: traverse_util.flatten_dict(leaves, sep="/")
                for layer, leaves in tree.items()} for c, tree in abstract.items()}
    placed = _place(weights, flat)
    return {c: {layer: traverse_util.unflatten_dict(leaves, sep="/")
                for layer, leaves in tree.items()} for c, tree in placed.items()}


def check(model, forward, size):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras_encoders, "keras_weights", _weights_by_path)
        patch.setattr(keras_encoders, "fsjax_variables", _place_nested)
        return check_against_keras(model, forward, size)


# ---------------------------------------------------------------- tests

def test_small_transformer_matches_reference():
    size = 32
    model = reference(size, **SMALL)

    def forward(x):
        return clip.vision_transformer(x, **SMALL)

    variables = check(model, forward, size)
    check_names(model, forward, size, variables)
    attn = variables["params"]["visual_transformer_resblocks_1_attn"]
    assert attn["query"]["kernel"].shape == (128, 2, 64)
    assert attn["attention_output"]["kernel"].shape == (2, 64, 128)
    assert attn["attention_output"]["bias"].shape == (128,)
    assert variables["params"]["visual_positional_embedding"]["variable_1"].shape == (17, 128)


@pytest.mark.parametrize("arch", [
    "clipv_vit-b-32",
    pytest.param("clipv_vit-b-16", marks=pytest.mark.slow),
    pytest.param("clipv_farl-b-16-16", marks=pytest.mark.slow),
    pytest.param("clipv_farl-b-16-64", marks=pytest.mark.slow),
    pytest.param("clipv_vit-l-14", marks=pytest.mark.slow),
    pytest.param("clipv_vit-l-14-336px", marks=pytest.mark.slow),
])
def test_matches_reference(arch):
    """Full width and depth on a 2x2 patch grid (5 tokens): Phaze-A's smallest input, 32 px,
    for 14 and 16 px patches, 64 px for 32 px patches (32 px would leave attention 2 tokens)."""
    size = 2 * clip.CONFIGS[arch].patch if arch == "clipv_vit-b-32" else input_size(arch, 7, False)
    assert size // clip.CONFIGS[arch].patch == 2
    model = reference_for(arch, size)

    def forward(x):
        return clip.build(x, arch)

    variables = check(model, forward, size)
    check_names(model, forward, size, variables)
    assert clip.keras_model_name(arch) == model.name == "visual"


def _formula(width, num_layers, patch, embed_dim, size):
    """Patch conv, class token, positional table, ln_pre + ln_post, blocks (LN 2w twice,
    attention 4w² + 4w, MLP 8w² + 5w), projection."""
    tokens = (size // patch) ** 2 + 1
    block = 2 * 2 * width + 4 * width * width + 4 * width + 8 * width * width + 5 * width
    return (3 * patch * patch * width + width + tokens * width + 2 * 2 * width
            + num_layers * block + width * embed_dim)


PUBLISHED = {"clipv_vit-b-32": 87_849_216, "clipv_vit-b-16": 86_192_640,
             "clipv_farl-b-16-16": 86_192_640, "clipv_farl-b-16-64": 86_192_640,
             "clipv_vit-l-14": 303_966_208, "clipv_vit-l-14-336px": 304_293_888}
"""CLIP's visual towers at their own resolution (the torch models' parameter counts)."""


def _count(arch, size):
    abstract = jax.eval_shape(Wrapped(lambda x: clip.build(x, arch)).init, jax.random.key(0),
                              jnp.zeros((1, size, size, 3)))
    assert set(abstract) == {"params"}
    return param_count(abstract)


@pytest.mark.parametrize("arch", clip.ARCHS)
def test_parameter_counts(arch):
    """fsjax's count at the config's resolution is the formula's and CLIP's own."""
    cfg = clip.CONFIGS[arch]
    assert ENCODERS[arch].default_size == cfg.resolution
    assert ENCODERS[arch].scaling == (0, 1)  # Faceswap feeds [0, 1] faces, no CLIP mean/std
    assert cfg.heads * 64 == cfg.width
    expected = _formula(cfg.width, cfg.layers, cfg.patch, cfg.embed_dim, cfg.resolution)
    assert expected == PUBLISHED[arch]
    assert _count(arch, cfg.resolution) == expected


def test_parameter_count_follows_input_size():
    """Only the positional table depends on the size: (size // patch)² + 1 rows (Phaze-A's
    sizes need not divide by the patch: 14 px patches at 112 px and 120 px give 8x8)."""
    cfg = clip.CONFIGS["clipv_vit-l-14"]
    base = _count("clipv_vit-l-14", 112)
    assert base == _formula(cfg.width, cfg.layers, cfg.patch, cfg.embed_dim, 112)
    assert _count("clipv_vit-l-14", 120) == base
    assert base - PUBLISHED["clipv_vit-l-14"] == (8 * 8 - 16 * 16) * cfg.width


def test_output_and_precision():
    """(batch, embed_dim) out; under bfloat16 the layers compute in it and every parameter
    (the float32-only embeddings included) stays float32."""
    opts = blocks.BlockOptions(policy=Policy.named("bfloat16"))
    module = Wrapped(lambda x: clip.vision_transformer(x, **SMALL, opts=opts))
    out, variables = jax.eval_shape(module.init_with_output, jax.random.key(0),
                                    jnp.zeros((3, 40, 40, 3)))
    assert out.shape == (3, 64) and out.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {
        jnp.dtype(jnp.float32)}
    # 40 px with 8 px patches: a 5x5 grid, 26 tokens.
    assert variables["params"]["visual_positional_embedding"]["variable_1"].shape == (26, 128)
    table = clip.scaled_normal(128 ** -0.5)(jax.random.key(1), (26, 128))
    assert 0.9 < float(jnp.std(table)) * 128 ** 0.5 < 1.1


def test_names_and_weights_files():
    assert clip.weights_file("clipv_vit-b-32") == "CLIPv_ViT-B-32_v1.h5"
    assert clip.weights_file("clipv_vit-l-14-336px") == "CLIPv_ViT-L-14-336px_v1.h5"
    assert clip.weights_file("clipv_farl-b-16-64") == "CLIPv_FaRL-B-16-64_v1.h5"
    assert clip.weights_url("clipv_vit-b-16") == (
        "https://github.com/deepfakes-models/faceswap-models/releases/download/v26.1/"
        "CLIPv_ViT-B-16_v1.zip")
    assert clip.keras_model_name("clipv_farl-b-16-16", size=64, load_weights=True) == "visual"
    assert set(clip.ARCHS) == {a for a in ENCODERS if ENCODERS[a].family == "clip"}
    for call in (lambda: clip.build(jnp.zeros((1, 32, 32, 3)), "mobilenet"),
                 lambda: clip.weights_file("vgg16"), lambda: clip.keras_model_name("clipv_rn50")):
        with pytest.raises(ValueError):
            call()
