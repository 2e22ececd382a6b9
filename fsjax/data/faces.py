"""Face folders for training: scan once up front, then load one crop (+ masks) per sample.

`scan_folder` reads and validates every header before training starts and precomputes each
face's alignment and pose, so that `load_sample` (run per sample inside grain workers) only
decodes the PNG, cuts the crop and draws the landmark masks. Everything here is plain
dataclasses and module-level functions, so it pickles into spawned workers.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable

import numpy as np

from fsjax.data import align, masks, stored_masks
from fsjax.data.header import FaceFileError, decode_image, read_header

LANDMARK_MASKS = ("none", "components", "extended")
MASK_TYPES = LANDMARK_MASKS + stored_masks.STORED_MASK_TYPES
MIN_FACES = 25  # Faceswap refuses to train a side with fewer faces
WARN_FACES = 250  # ...and warns below this many
_LISTED = 20  # bad files named one by one in an error message


class DataError(ValueError):
    """A face folder that cannot be used; the message is `"<folder>: <problem>"`."""

    def __init__(self, folder: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{folder}: {problem}")
        self.folder = str(folder)
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keeps the exception picklable across grain's spawned workers.
        return (type(self), (self.folder, self.problem))


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """What one training sample looks like (Faceswap's data and mask settings).

    Attributes:
        size: process size, max of the model input and output sizes.
        centering: "face", "head" or "legacy".
        coverage: percent of the centering's crop to keep.
        vertical_offset: percent of the core face box to move the crop down.
        mask_type: "none", a landmark mask ("components", "extended") or a mask stored in the
            face files (`stored_masks.STORED_MASK_TYPES`).
        mask_dilation: percent of the mask's size to dilate (negative: erode) the face mask.
        mask_blur_kernel: Gaussian blur of stored masks, in stored pixels.
        mask_threshold: percent near 0 / 255 at which stored mask values snap to 0 / 255.
        faceswap_compat: reproduce Faceswap's stored-mask vertical-offset bug.
        eye_mask: also return the eye mask (Faceswap: penalized loss and eye multiplier > 1).
        mouth_mask: also return the mouth mask (Faceswap: penalized loss and mouth mult. > 1).
    """

    size: int
    centering: str = "face"
    coverage: float = 100.0
    vertical_offset: float = 0.0
    mask_type: str = "extended"
    mask_dilation: float = 0.0
    mask_blur_kernel: int = 3
    mask_threshold: float = 4.0
    faceswap_compat: bool = False
    eye_mask: bool = True
    mouth_mask: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.size, (int, np.integer)) or self.size <= 0:
            raise ValueError(f"SampleSpec.size must be a positive int, got {self.size!r}")
        if self.centering not in align.CENTERINGS:
            raise ValueError(f"SampleSpec.centering {self.centering!r} is not one of "
                             f"{align.CENTERINGS}")
        if not 0.0 < self.coverage <= 100.0:
            raise ValueError(f"SampleSpec.coverage must be in (0, 100], got {self.coverage}")
        if self.mask_type not in MASK_TYPES:
            raise ValueError(f"SampleSpec.mask_type {self.mask_type!r} is not one of "
                             f"{MASK_TYPES}")


@dataclasses.dataclass(frozen=True, eq=False)
class FaceMeta:
    """One face file with the geometry every sample of it needs.

    Attributes:
        path: the PNG file.
        png_size: side of the head-centred PNG in pixels.
        landmarks: (68, 2) float32 frame-space landmarks from the header.
        matrix: (2, 3) float64 frame -> normalised legacy space (Umeyama).
        offsets: pose offsets per centering, float32 (2,) each (see `align.pose_offsets`).
        stored_mask: the header entry of the stored mask training uses, if it uses one.
    """

    path: pathlib.Path
    png_size: int
    landmarks: np.ndarray
    matrix: np.ndarray
    offsets: dict[str, np.ndarray]
    stored_mask: dict | None = None


def read_face_meta(path: str | os.PathLike, stored_mask: str | None = None) -> FaceMeta:
    """Validate one face file's header and precompute its alignment and pose.

    With `stored_mask`, the face must carry that mask; it is decoded once here to check it.
    """
    path = pathlib.Path(path)
    header = read_header(path)
    landmarks = header["alignments"]["landmarks_xy"]
    if landmarks.shape != (68, 2):
        raise FaceFileError(path, f"has {landmarks.shape[0]}-point landmarks; training needs "
                                  "68-point landmarks")
    matrix = align.legacy_matrix(landmarks)
    if not np.isfinite(matrix).all():
        raise FaceFileError(path, "landmarks are degenerate (no alignment can be fitted)")
    offsets = align.pose_offsets(landmarks, matrix)
    if not all(np.isfinite(val).all() for val in offsets.values()):
        raise FaceFileError(path, "head pose could not be estimated from the landmarks")
    for arr in (landmarks, matrix, *offsets.values()):
        arr.setflags(write=False)
    entry = None
    if stored_mask is not None:
        entry = header["alignments"]["mask"].get(stored_mask)
        if entry is None:
            have = ", ".join(sorted(header["alignments"]["mask"])) or "none"
            raise FaceFileError(path, f"has no stored '{stored_mask}' mask (it has: {have}); "
                                      "choose another loss.mask_type or add the mask with "
                                      "Faceswap's mask tool")
        stored_masks.decode_stored_mask(entry, path=path, name=stored_mask)
    return FaceMeta(path=path, png_size=int(header["width"]), landmarks=landmarks,
                    matrix=matrix, offsets=offsets, stored_mask=entry)


def list_face_files(folder: str | os.PathLike) -> list[pathlib.Path]:
    """Files ending in .png in any letter case, sorted by name."""
    folder = pathlib.Path(folder)
    if not folder.exists():
        raise DataError(folder, "face folder does not exist")
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise DataError(folder, f"cannot list folder ({err.strerror or err})") from err
    # Faceswap itself only loads lower-case ".png" while counting ".PNG" too; load both.
    files = [p for p in entries if p.suffix.lower() == ".png" and p.is_file()]
    return sorted(files, key=lambda p: p.name)


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """The result of scanning one face folder.

    Attributes:
        faces: the usable faces, sorted by file name.
        skipped: (file, reason) for every face file that cannot be used.
    """

    faces: list[FaceMeta]
    skipped: list[tuple[pathlib.Path, str]]


def scan_faces(
    folder: str | os.PathLike,
    *,
    on_bad: str = "stop",
    min_faces: int = MIN_FACES,
    progress: Callable[[int, int], None] | None = None,
    stored_mask: str | None = None,
) -> FolderScan:
    """Read and validate every face in `folder` before training starts.

    Args:
        folder: a folder of Faceswap-extracted face PNGs.
        on_bad: "stop" raises on bad files, listing each with its reason; "skip" leaves them out
            (they are returned in `skipped` so the caller can warn).
        min_faces: fewest usable faces accepted (Faceswap needs 25 per side).
        progress: called as `progress(done, total)` while scanning.
        stored_mask: a stored mask type every face must carry (loss.mask_type), if one is used.

    Raises:
        DataError: missing folder, no PNG files, fewer than `min_faces` usable faces.
        FaceFileError: with on_bad="stop", the bad files (the message lists them all).
    """
    if on_bad not in ("stop", "skip"):
        raise ValueError(f"on_bad must be 'stop' or 'skip', got {on_bad!r}")
    files = list_face_files(folder)
    if not files:
        raise DataError(folder, "no .png face files found (expected Faceswap-extracted faces)")
    metas: list[FaceMeta] = []
    errors: list[FaceFileError] = []
    for done, path in enumerate(files, 1):
        try:
            metas.append(read_face_meta(path, stored_mask))
        except FaceFileError as err:
            errors.append(err)
        if progress is not None:
            progress(done, len(files))
    if errors and on_bad == "stop":
        if len(errors) == 1:
            raise errors[0]
        others = errors[1:]
        listed = "".join(f"\n  {e}" for e in others[:_LISTED])
        more = "" if len(others) <= _LISTED else f"\n  ... and {len(others) - _LISTED} more"
        raise FaceFileError(errors[0].path, f"{errors[0].problem}\n{len(others)} more bad "
                                            f"files in this folder:{listed}{more}") from errors[0]
    if len(metas) < min_faces:
        skipped = f" ({len(errors)} bad files skipped)" if errors else ""
        raise DataError(folder, f"only {len(metas)} usable faces{skipped}; at least "
                                f"{min_faces} are needed to train a side")
    return FolderScan(metas, [(pathlib.Path(e.path), e.problem) for e in errors])


def scan_folder(folder: str | os.PathLike, *, min_faces: int = MIN_FACES) -> list[FaceMeta]:
    """`scan_faces` that stops on any bad file; returns the faces sorted by file name."""
    return scan_faces(folder, on_bad="stop", min_faces=min_faces).faces


def load_sample(meta: FaceMeta, spec: SampleSpec) -> dict[str, np.ndarray]:
    """Decode one face and return its training crop, crop-space landmarks and masks.

    Matches Faceswap's TrainSet item (no augmentation) for landmark mask types.

    Returns:
        "image": uint8 (S, S, 3) BGR; "landmarks": float32 (68, 2) crop pixels; and, as
        configured, "mask_face", "mask_eye", "mask_mouth": uint8 (S, S) in 0..255.
    """
    image = decode_image(meta.path)
    if image.shape[:2] != (meta.png_size, meta.png_size):
        raise FaceFileError(meta.path, f"image is {image.shape[1]}x{image.shape[0]} but was "
                                       f"{meta.png_size} px when scanned (file changed?)")
    crop = align.train_crop(meta.landmarks, meta.png_size, spec.centering, spec.coverage,
                            spec.vertical_offset, spec.size, matrix=meta.matrix,
                            offsets=meta.offsets)
    sample = {"image": align.crop_face(image, crop), "landmarks": crop.landmarks}
    if spec.mask_type in stored_masks.STORED_MASK_TYPES:
        sample["mask_face"] = _stored_face_mask(meta, spec)
    elif spec.mask_type != "none":
        sample["mask_face"] = masks.face_mask(spec.mask_type, crop.landmarks, spec.size,
                                              spec.mask_dilation)
    if spec.eye_mask:
        sample["mask_eye"] = masks.eye_mask(crop.landmarks, spec.size)
    if spec.mouth_mask:
        sample["mask_mouth"] = masks.mouth_mask(crop.landmarks, spec.size)
    return sample


def _stored_face_mask(meta: FaceMeta, spec: SampleSpec) -> np.ndarray:
    """The face's stored NN mask, processed to this sample's crop (stored_masks module)."""
    if meta.stored_mask is None:
        raise FaceFileError(meta.path, f"was scanned without its '{spec.mask_type}' mask")
    entry = meta.stored_mask
    mask = stored_masks.decode_stored_mask(entry, path=meta.path, name=spec.mask_type)
    return stored_masks.process_stored_mask(
        mask, stored_centering=entry["stored_centering"], centering=spec.centering,
        coverage=spec.coverage, vertical_offset=spec.vertical_offset, offsets=meta.offsets,
        size=spec.size, dilation=spec.mask_dilation, blur_kernel=spec.mask_blur_kernel,
        threshold=spec.mask_threshold, faceswap_compat=spec.faceswap_compat)
