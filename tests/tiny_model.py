"""A test-only model with Original's structure at a fraction of its width (64 px in and out):
loop and optimizer tests run the real training code on it in seconds."""

import flax.linen as nn
import jax.numpy as jnp

from fsjax.models.common import ModelSpec
from fsjax.nn import blocks
from fsjax.nn.precision import Policy


class _TinyEncoder(nn.Module):
    opts: blocks.BlockOptions

    @nn.compact
    def __call__(self, x):
        for f in (8, 16, 32, 32):  # 64 -> 4 px; the conv on 8x8 takes the space-to-depth path
            x = blocks.conv2d_block(x, f, name=f"conv_{f}_{x.shape[1]}", opts=self.opts)
        x = blocks.dense(x.reshape(x.shape[0], -1), 64, name="dense", opts=self.opts)
        x = blocks.dense(x, 4 * 4 * 32, name="dense_1", opts=self.opts).reshape(-1, 4, 4, 32)
        return blocks.upscale_block(x, 16, name="upscale", opts=self.opts)


class _TinyDecoder(nn.Module):
    opts: blocks.BlockOptions

    @nn.compact
    def __call__(self, x):
        for f in (16, 8, 8):
            x = blocks.upscale_block(x, f, name=f"upscale_{f}_{x.shape[1]}", opts=self.opts)
        return {"faces": (blocks.conv2d_output(x, 3, 5, name="face_out", opts=self.opts),)}


class TinyAutoencoder(nn.Module):
    """Original's structure from the same blocks at a fraction of the width (test-only)."""

    dtype: object = jnp.float32
    param_dtype: object = jnp.float32

    def setup(self):  # any dtypes, float64 included (the step tests' gradient checks)
        opts = blocks.BlockOptions(policy=Policy(self.dtype, self.param_dtype))
        self.encoder = _TinyEncoder(opts)
        self.decoder_a, self.decoder_b = _TinyDecoder(opts), _TinyDecoder(opts)

    def __call__(self, face_a, face_b):
        return {"a": self.decoder_a(self.encoder(face_a)),
                "b": self.decoder_b(self.encoder(face_b))}


def tiny_spec(name: str = "original", dtype: str = "float32") -> ModelSpec:
    """A ModelSpec for the loop, named like the plugin it stands in for, computing in `dtype`
    (the run's `model.dtype`)."""
    return ModelSpec(module=TinyAutoencoder(dtype=jnp.dtype(dtype)), name=name, input_size=64,
                     output_sizes=(64,), learn_mask=False)


BATCH = 2


def loop_config(model_dir, faces, optimizer=None, **train):
    """An experiment for the loop on the tiny model: batch 2, no logs or previews, saves every
    50 iterations unless `train` says otherwise."""
    from fsjax.config import DataConfig, ExperimentConfig, OptimizerConfig, TrainConfig

    train = dict(dict(batch_size=BATCH, no_logs=True, write_image=False, save_interval=50),
                 **train)
    return ExperimentConfig(
        data=DataConfig(faces_a=faces[0], faces_b=faces[1], num_processes=0),
        optimizer=optimizer or OptimizerConfig(),
        train=TrainConfig(model_dir=model_dir, **train))
