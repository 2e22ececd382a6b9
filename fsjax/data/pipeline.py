"""The training input pipeline: Faceswap's per-side sampling, loading and augmentation on grain.

Sampling (reference/data.md §4.1). Each side walks an endless stream of random permutations of its
own faces: stream position k of side s is face `perm(seed, s, k // n_s)[k % n_s]`. So every face
of a side is seen once before any face repeats, and the smaller side simply carries on into its
next permutation while the larger one finishes (Faceswap's "carry the unused tail into the next
epoch"). Position k of both streams forms training pair k; batch i holds pairs
[i B, (i + 1) B). Faceswap also re-orders each epoch's pairs with a RandomSampler (so a face of
the smaller side can come round again before the rest of its permutation) and drops each epoch's
last partial batch (those faces are skipped that epoch). The endless streams here have neither
quirk, and they keep every batch a pure function of its position.

Determinism. Pair k is loaded and augmented by the transforms in `fsjax.data.pairs`, with a
generator seeded from (seed, k). Batch i is therefore a pure function of (seed, i, faces,
spec, augmentation config): it does not depend on worker count, threads or prefetching, and an
iterator can resume anywhere by slicing the dataset.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import grain
import numpy as np

from fsjax.config import AugmentConfig
from fsjax.data.augment import MASK_KEYS
from fsjax.data.faces import FaceMeta, SampleSpec, load_sample
from fsjax.data.pairs import SIDES, AugmentPair, FaceswapBatchAugment, LoadPair, Partners

STATE_VERSION = 1
_STREAM_LENGTH = sys.maxsize  # "endless": grain needs a length, nobody trains this long

Batch = dict[str, dict[str, np.ndarray]]


def _check_inputs(faces_a: Sequence[FaceMeta], faces_b: Sequence[FaceMeta], batch_size: int,
                  seed: int) -> None:
    if not faces_a or not faces_b:
        raise ValueError("both sides need at least one face")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _pair_dataset(faces_a: Sequence[FaceMeta], faces_b: Sequence[FaceMeta], spec: SampleSpec,
                  augment_cfg: AugmentConfig, seed: int, batch_size: int) -> grain.MapDataset:
    """Element k: the augmented pair at stream position k, masks as (S, S, 1).

    With `spec.faceswap_compat` the pairs of one batch are the positions [i B, (i + 1) B).
    """
    use_partners = augment_cfg.warp_to_landmarks and not augment_cfg.no_warp
    partners = Partners.build(faces_a, faces_b, spec) if use_partners else None
    compat = spec.faceswap_compat
    load = LoadPair(tuple(faces_a), tuple(faces_b), spec, seed, keep_landmarks=use_partners,
                    keep_position=compat)
    augment = AugmentPair(augment_cfg, partners, compat)
    pairs = grain.MapDataset.range(_STREAM_LENGTH).map(load)
    if compat:
        return pairs.map(FaceswapBatchAugment(augment, seed, batch_size, spec.size))
    return pairs.random_map(augment, seed=seed)


def make_train_dataset(
    faces_a: Sequence[FaceMeta],
    faces_b: Sequence[FaceMeta],
    spec: SampleSpec,
    augment_cfg: AugmentConfig,
    *,
    batch_size: int,
    seed: int,
) -> grain.MapDataset:
    """A grain MapDataset whose element i is training batch i (random access, endless).

    Args:
        faces_a, faces_b: the scanned faces of each side (faces.scan_folder).
        spec: crop size, centering and which masks to load.
        augment_cfg: augmentation ranges and switches.
        batch_size: faces per side per batch.
        seed: non-negative; fixes sampling and augmentation.

    Returns:
        Dataset of `{"a": {"input", "target", masks...}, "b": {...}}`: "input" (warped) and
        "target" uint8 (B, S, S, 3) BGR, and "mask_face" / "mask_eye" / "mask_mouth" uint8
        (B, S, S, 1) for the masks `spec` asks for.
    """
    _check_inputs(faces_a, faces_b, batch_size, seed)
    pairs = _pair_dataset(faces_a, faces_b, spec, augment_cfg, seed, batch_size)
    return pairs.batch(batch_size, drop_remainder=True)


def _worker_init(worker_index: int, worker_count: int) -> None:
    """Set up a worker process.

    OpenCV runs single-threaded (the workers are the parallelism), and Ctrl-C is ignored: a
    terminal sends SIGINT to the whole process group, but stopping is the training process's job
    (it finishes the step, saves, then closes the workers).
    """
    del worker_index, worker_count
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclasses.dataclass(frozen=True)
class ShardPositions(grain.transforms.Map):
    """Local element n -> the global stream position this process loads for it.

    Global batch i holds positions [start + i B, start + (i + 1) B); process p of P loads the
    contiguous slice [p B/P, (p + 1) B/P) of every batch, so the processes' local batches, put side
    by side in process order, are exactly the single-process batch.
    """

    start: int
    batch_size: int
    shard_index: int
    shard_count: int

    def map(self, element: int) -> int:
        local = self.batch_size // self.shard_count
        batch, offset = divmod(element, local)
        return self.start + batch * self.batch_size + self.shard_index * local + offset


@dataclasses.dataclass(frozen=True)
class PairAt(grain.transforms.Map):
    """Global stream position -> the augmented pair there (random access into the pair dataset)."""

    pairs: grain.MapDataset

    def map(self, element: int) -> dict:
        return self.pairs[element]


class TrainIterator(Iterator[Batch]):
    """Checkpointable iterator over the training batches of `make_train_dataset`.

    State (`get_state`) is a small JSON-able dict of plain ints:
    `{"version": 1, "seed": <int>, "next_sample": <int>}`, where `next_sample` is the stream
    position of the first pair of the next batch to be returned. Store it as JSON (orbax
    `args.JsonSave`) or as bytes (`json.dumps(state).encode()`); `set_state` takes any of the
    three forms. Because every pair is a pure function of (seed, position), a restored iterator
    yields exactly the batches an uninterrupted one would, with any number of workers; if the
    batch size changed, it goes on from the same pair.
    """

    def __init__(self, faces_a: Sequence[FaceMeta], faces_b: Sequence[FaceMeta],
                 spec: SampleSpec, augment_cfg: AugmentConfig, *, batch_size: int, seed: int,
                 num_processes: int, pre_fetch: int, shard_index: int = 0,
                 shard_count: int = 1) -> None:
        _check_inputs(faces_a, faces_b, batch_size, seed)
        if not 0 <= shard_index < shard_count or batch_size % shard_count:
            raise ValueError(f"batch_size {batch_size} cannot be split into {shard_count} process "
                             f"shards (shard {shard_index})")
        if num_processes < 0 or pre_fetch < 1:
            raise ValueError(f"need num_processes >= 0 and pre_fetch >= 1, got {num_processes}"
                             f" and {pre_fetch}")
        self._pairs = _pair_dataset(faces_a, faces_b, spec, augment_cfg, seed, batch_size)
        self._batch_size = batch_size
        self._seed = seed
        self._num_processes = num_processes
        self._pre_fetch = pre_fetch
        self._shard = (shard_index, shard_count)
        self._next_sample = 0
        self._iterator: Any = None  # grain iterator, built lazily so set_state starts nothing

    def _start(self) -> None:
        shard_index, shard_count = self._shard
        if shard_count == 1:
            pairs = self._pairs[self._next_sample:]
        else:
            positions = ShardPositions(self._next_sample, self._batch_size, *self._shard)
            pairs = (grain.MapDataset.range(_STREAM_LENGTH).map(positions)
                     .map(PairAt(self._pairs)))
        batches = pairs.batch(self._batch_size // shard_count, drop_remainder=True)
        # Threads overlap PNG decoding and OpenCV (both release the GIL); buffers stay small so a
        # few batches of large faces do not pile up in memory (grain's default buffer is 500).
        threads = 2 if self._num_processes == 0 else 1
        read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=self._pre_fetch)
        stream = batches.to_iter_dataset(read)
        if self._num_processes > 0:
            options = grain.MultiprocessingOptions(num_workers=self._num_processes,
                                                   per_worker_buffer_size=self._pre_fetch)
            stream = stream.mp_prefetch(options, worker_init_fn=_worker_init)
        self._iterator = iter(stream)

    def __next__(self) -> Batch:
        if self._iterator is None:
            self._start()
        batch = next(self._iterator)
        self._next_sample += self._batch_size
        # Worker batches arrive as views of shared memory that is freed only when the view dies;
        # plain copies (~1 ms per MB) keep consumers from pinning it or leaking it at exit.
        return {side: {key: np.array(value) for key, value in arrays.items()}
                for side, arrays in batch.items()}

    def get_state(self) -> dict[str, int]:
        """The position to resume from (see the class docstring)."""
        return {"version": STATE_VERSION, "seed": self._seed, "next_sample": self._next_sample}

    def set_state(self, state: dict[str, int] | bytes | str) -> None:
        """Resume from a `get_state` result (dict, or its JSON text or bytes).

        Raises:
            ValueError: unknown version, or a state saved with a different seed.
        """
        if isinstance(state, (bytes, str)):
            state = json.loads(state)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown data iterator state version {state.get('version')!r}")
        if int(state["seed"]) != self._seed:
            raise ValueError(f"data iterator state was saved with seed {state['seed']}, but this "
                             f"pipeline uses seed {self._seed}")
        position = int(state["next_sample"])
        if position < 0:
            raise ValueError(f"next_sample must be >= 0, got {position}")
        self.close()
        self._next_sample = position

    def close(self) -> None:
        """Stop worker processes (if any); the next `next()` starts from the current state."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None

    def __enter__(self) -> TrainIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_train_iter(
    faces_a: Sequence[FaceMeta],
    faces_b: Sequence[FaceMeta],
    spec: SampleSpec,
    augment_cfg: AugmentConfig,
    *,
    batch_size: int,
    seed: int,
    num_processes: int,
    pre_fetch: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> TrainIterator:
    """Iterator over the batches of `make_train_dataset`, optionally in worker processes.

    Args:
        num_processes: grain worker processes (0: load in this process, with 2 threads).
        pre_fetch: batches each worker (or the in-process reader) prepares ahead.
        shard_index, shard_count: this JAX process and the number of processes; each loads only
            its slice of every global batch (`jax.make_array_from_process_local_data` joins them).
        others: as `make_train_dataset`.

    Returns:
        A `TrainIterator` with `get_state` / `set_state` / `close`. Scripts that use workers
        need an `if __name__ == "__main__":` guard (workers are spawned).
    """
    return TrainIterator(faces_a, faces_b, spec, augment_cfg, batch_size=batch_size, seed=seed,
                         num_processes=num_processes, pre_fetch=pre_fetch,
                         shard_index=shard_index, shard_count=shard_count)


def preview_batch(faces_a: Sequence[FaceMeta], faces_b: Sequence[FaceMeta], spec: SampleSpec,
                  n: int, seed: int | None) -> Batch:
    """Un-augmented crops of `n` distinct faces per side, chosen by `seed`, for preview images
    (`seed=None`: the first `n` in the given order, as the timelapse takes them).

    Returns the batch layout of `make_train_dataset` with "input" equal to "target". Faceswap's
    preview shows the full-coverage crop as the target; pass a second spec for that if wanted.
    """
    rng = np.random.default_rng(seed)
    out: Batch = {}
    for side, faces in zip(SIDES, (faces_a, faces_b), strict=True):
        if not 1 <= n <= len(faces):
            raise ValueError(f"preview needs 1..{len(faces)} faces for side {side}, got {n}")
        chosen = (np.arange(n) if seed is None
                  else np.sort(rng.choice(len(faces), size=n, replace=False)))
        samples = [load_sample(faces[i], spec) for i in chosen]
        images = np.stack([s["image"] for s in samples])
        side_batch = {"input": images, "target": images.copy()}
        for key in MASK_KEYS:
            if key in samples[0]:
                side_batch[key] = np.stack([s[key] for s in samples])[..., None]
        out[side] = side_batch
    return out
