"""One training pair: which faces it holds, loading them, and augmenting them as Faceswap does.

Sampling (reference/data.md §4.1) is a pure function of (seed, side, stream position): see
`side_face_indices`. A pair is loaded by `LoadPair` and augmented by `AugmentPair` (grain
RandomMap, generator from (seed, position)) or, under `faceswap_compat`, by
`FaceswapBatchAugment`, which reproduces Faceswap's batch-level CLAHE quirk. Warp-to-landmarks
partners come from `Partners`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import grain
import numpy as np

from fsjax.config import AugmentConfig
from fsjax.data import align, landmark_warp
from fsjax.data.augment import AugmentDraw, apply_augmentation, draw_augmentation
from fsjax.data.faces import FaceMeta, SampleSpec, load_sample

SIDES = ("a", "b")
_PERMUTATION_CACHE = 8  # a few (side, epoch) permutations in flight around an epoch edge


@functools.lru_cache(maxsize=_PERMUTATION_CACHE)
def _permutation(seed: int, side: int, epoch: int, num_faces: int) -> np.ndarray:
    # Pure function of its arguments, memoised only because a permutation of a big folder costs
    # about as much as loading a face; read-only so no caller can corrupt the memo.
    perm = np.random.default_rng([seed, side, epoch]).permutation(num_faces)
    perm.setflags(write=False)
    return perm


def side_face_indices(seed: int, side: int, num_faces: int, positions: np.ndarray) -> np.ndarray:
    """Face indices at stream `positions` of one side (see the module docstring).

    Args:
        seed: pipeline seed (non-negative).
        side: 0 for A, 1 for B; each side has its own permutations.
        num_faces: faces on that side.
        positions: int array of stream positions (>= 0).

    Returns:
        int64 array of face indices, same shape as `positions`.
    """
    positions = np.asarray(positions, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_faces)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _permutation(seed, side, int(epoch), num_faces)[offsets[where]]
    return out


@dataclasses.dataclass(frozen=True)
class LoadPair(grain.transforms.Map):
    """Stream position -> {"a": sample, "b": sample}, un-augmented (faces.load_sample)."""

    faces_a: tuple[FaceMeta, ...]
    faces_b: tuple[FaceMeta, ...]
    spec: SampleSpec
    seed: int
    keep_landmarks: bool = False  # warp-to-landmarks needs each sample's face and landmarks
    keep_position: bool = False  # FaceswapBatchAugment seeds each pair from its position

    def map(self, element: int) -> dict[str, dict[str, np.ndarray]]:
        pair = {}
        sides = zip(SIDES, (self.faces_a, self.faces_b), strict=True)
        for side_id, (side, faces) in enumerate(sides):
            index = side_face_indices(self.seed, side_id, len(faces), np.array([element]))[0]
            sample = load_sample(faces[index], self.spec)
            if self.keep_landmarks:
                sample["index"] = np.int64(index)
            else:
                sample.pop("landmarks")
            pair[side] = sample
        if self.keep_position:
            pair["position"] = np.int64(element)
        return pair


@dataclasses.dataclass(frozen=True)
class AugmentPair(grain.transforms.RandomMap):
    """Augment both sides of a pair with the generator grain derives from (seed, position).

    Faceswap augments a whole batch at once; see fsjax.data.augment for where per-sample
    augmentation differs.
    """

    config: AugmentConfig
    partners: Partners | None = None
    faceswap_compat: bool = False

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        size = element["a"]["image"].shape[0]
        return self.apply(element, [draw_augmentation(rng, self.config, size) for _ in SIDES])

    def apply(self, element: dict, draws: list[AugmentDraw]) -> dict:
        """Augment side A with `draws[0]` and side B with `draws[1]`."""
        out = {}
        for side_id, (side, draw) in enumerate(zip(SIDES, draws, strict=True)):
            sample, partner = element[side], None
            if self.partners is not None:
                partner = self.partners.landmarks_for(side_id, int(sample.pop("index")),
                                                      draw.partner)
            out[side] = apply_augmentation(sample, draw, self.config, partner,
                                           self.faceswap_compat)
        return out


@dataclasses.dataclass(frozen=True)
class FaceswapBatchAugment(grain.transforms.Map):
    """`AugmentPair` as Faceswap does it per batch, for `faceswap_compat`.

    Faceswap draws CLAHE for the whole batch (side A first) and then tests the drawn indices
    with `np.any`, so when the batch's first face is the only one drawn, nobody gets CLAHE. To
    know that, a pair must see its batch-mates' draws: every pair here draws from its own
    generator seeded by (seed, position), which the first pair of a batch can replay cheaply
    (draws only, no images) for the others.
    """

    augment: AugmentPair
    seed: int
    batch_size: int
    size: int

    def _draws(self, position: int) -> list[AugmentDraw]:
        rng = np.random.default_rng([self.seed, position])
        return [draw_augmentation(rng, self.augment.config, self.size) for _ in SIDES]

    def map(self, element: dict) -> dict:
        position = int(element.pop("position"))
        draws = self._draws(position)
        if position % self.batch_size == 0 and draws[0].clahe_grid is not None:
            mates = [d for p in range(position + 1, position + self.batch_size)
                     for d in self._draws(p)]
            if all(d.clahe_grid is None for d in draws[1:] + mates):
                draws[0] = dataclasses.replace(draws[0], clahe_grid=None)
        return self.augment.apply(element, draws)


@dataclasses.dataclass(frozen=True)
class Partners:
    """For warp-to-landmarks: every face's crop-space landmarks and its nearest other-side faces.

    Built once from the scanned faces (no image is decoded): `nearest[s][i]` lists the faces of
    the other side whose landmarks are closest to face i of side s.
    """

    landmarks: tuple[np.ndarray, np.ndarray]
    nearest: tuple[np.ndarray, np.ndarray]

    @classmethod
    def build(cls, faces_a: Sequence[FaceMeta], faces_b: Sequence[FaceMeta],
              spec: SampleSpec) -> Partners:
        def crop_landmarks(faces: Sequence[FaceMeta]) -> np.ndarray:
            return np.stack([
                align.train_crop(m.landmarks, m.png_size, spec.centering, spec.coverage,
                                 spec.vertical_offset, spec.size, matrix=m.matrix,
                                 offsets=m.offsets).landmarks
                for m in faces])

        landmarks = (crop_landmarks(faces_a), crop_landmarks(faces_b))
        return cls(landmarks, landmark_warp.nearest_faces(*landmarks))

    def landmarks_for(self, side: int, index: int, draw: float) -> np.ndarray:
        """The partner of face `index` of `side` picked by `draw` in [0, 1)."""
        choices = self.nearest[side][index]
        return self.landmarks[1 - side][choices[int(draw * len(choices))]]
