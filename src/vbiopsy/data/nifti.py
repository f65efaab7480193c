"""NIfTI I/O in canonical RAS orientation, with the validation every entry point needs.

Every volume the toolkit reads goes through :func:`load_volume`, which reorients to the closest
canonical (RAS+) orientation with nibabel, so voxel axis 0 runs left→right, 1 posterior→anterior,
2 inferior→superior whatever the scanner wrote. Problems are raised as :class:`InputError`
naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from vbiopsy.atomic import atomic_path
from vbiopsy.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES = 348, 540
GZIP_MAGIC = b"\x1f\x8b"
SPACING_RANGE_MM = (0.01, 50.0)
"""Voxel sizes accepted on any axis, in mm: from microscopy-grade MRI to the thickest clinical slices."""


@dataclass(frozen=True)
class Grid:
    """The voxel grid of a volume in canonical RAS: ``shape`` (voxels) and ``affine`` (4×4, mm).

    ``stored_axes`` is the orientation the file was written in (e.g. ``"LAS"``), when known: it
    explains a mismatch caused by a flipped header.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    stored_axes: str | None = field(default=None, compare=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def mismatch(self, other: Grid, atol_mm: float = 1e-3) -> str | None:
        """Describe how ``other`` differs from this grid, or ``None`` if they match within ``atol_mm``."""
        if self.shape != other.shape:
            return f"shape {other.shape} != {self.shape}"
        diff = float(np.max(np.abs(self.affine - other.affine)))
        if diff > atol_mm:
            flipped = self.stored_axes and other.stored_axes and self.stored_axes != other.stored_axes
            why = f"; stored orientation {other.stored_axes} vs {self.stored_axes}" if flipped else ""
            return f"affine differs by up to {diff:.3g} mm (tolerance {atol_mm:g}){why}"
        return None


@dataclass(frozen=True)
class Volume:
    """A 3-D image in canonical RAS: ``array`` (X, Y, Z) and its ``affine`` (voxel → mm)."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def grid(self) -> Grid:
        return Grid(tuple(int(s) for s in self.array.shape), self.affine)  # type: ignore[arg-type]


def is_nifti(path: str | Path) -> bool:
    """True if the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's header-fix messages ("pixdim[1,2,3] should be non-zero; setting 0 dims to 1"),
    printed on stderr beside our one error line. (nibabel's ``LoggingOutputSuppressor`` drops the
    handler for good and the message still reaches stderr through logging's last-resort handler.)"""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open(path: Path) -> tuple[nib.Nifti1Image, tuple[int, int, int]]:
    """Load the header of ``path`` and validate it: readable, 3-D, a usable voxel-to-world geometry.

    Returns the image (voxels not read yet) and its spatial shape in file order.
    """
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as err:
        raise InputError(path, f"not a readable NIfTI image ({_why_unreadable(path, err)})") from None
    shape = _spatial_shape(path, img.shape)
    _check_geometry(path, img)
    return img, shape  # type: ignore[return-value]


def _why_unreadable(path: Path, err: BaseException) -> str:
    """Say in plain words why nibabel could not open ``path`` (its own messages, e.g. "Cannot work out
    file type", do not tell an empty file from a text file or a download cut short)."""
    if path.stat().st_size == 0:
        return "the file is empty, 0 bytes"
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
        if path.name.lower().endswith(".gz"):
            if magic != GZIP_MAGIC:
                return "named .gz but not gzip-compressed"
            with gzip.open(path) as handle:
                head = handle.read(NIFTI2_HEADER_BYTES)
        else:
            with path.open("rb") as handle:
                head = handle.read(NIFTI2_HEADER_BYTES)
    except EOFError:
        return "the gzip stream is cut short: truncated file"
    except (OSError, zlib.error) as gz_err:
        return f"corrupt gzip stream: {_short(gz_err)}"
    if len(head) < NIFTI1_HEADER_BYTES:
        return f"truncated header: {len(head)} of {NIFTI1_HEADER_BYTES} bytes"
    sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    if not sizes & {NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES}:
        return "no NIfTI-1/2 header at the start of the file"
    return _short(err)


def _written_pixdim(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """The spatial voxel sizes (``pixdim[1:4]``) as written: nibabel silently replaces zeros by 1 and
    negative values by their absolute value when it loads a header."""
    try:
        with nib.openers.ImageOpener(str(path)) as handle:
            raw = type(img.header).from_fileobj(handle, check=False)
    except (OSError, EOFError, zlib.error, ValueError, nib.spatialimages.HeaderDataError) as err:
        raise InputError(path, f"not a readable NIfTI image ({_short(err)})") from None
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def _mm(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _check_geometry(path: Path, img: nib.Nifti1Image) -> None:
    """Refuse headers whose voxel size or affine no scanner writes (zero/negative/absurd spacing,
    non-finite or singular affine): they would be reoriented and resampled into nonsense."""
    pixdim = _written_pixdim(path, img)
    if not np.all(np.isfinite(pixdim) & (pixdim > 0)):
        raise InputError(path, f"header voxel size (pixdim) {_mm(pixdim)} mm is not positive; "
                               "NIfTI voxel sizes must be positive numbers")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError(path, "affine (voxel-to-world matrix) has NaN or infinite entries")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if spacing.min() == 0 or abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(spacing)):
        raise InputError(path, f"affine (voxel-to-world matrix) is singular: voxel axes collapse or are parallel "
                               f"(voxel size {_mm(spacing)} mm)")
    if spacing.min() < SPACING_RANGE_MM[0] or spacing.max() > SPACING_RANGE_MM[1]:
        raise InputError(path, f"voxel size {_mm(spacing)} mm is implausible for MRI (expected "
                               f"{SPACING_RANGE_MM[0]:g} to {SPACING_RANGE_MM[1]:g} mm per axis)")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Accept (X, Y, Z) and (X, Y, Z, 1, ...); reject 2-D and true 4-D images."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 3:
        kind = "2-D" if len(dims) < 3 else f"{len(dims)}-D"
        raise InputError(path, f"expected a 3-D image, got a {kind} image of shape {tuple(shape)}")
    if min(dims) < 1:
        raise InputError(path, f"image has an empty dimension, shape {tuple(shape)}")
    return dims[0], dims[1], dims[2]


def read_grid(path: str | Path) -> Grid:
    """Read only the header and return the canonical-RAS grid (no voxel data is loaded)."""
    path = Path(path)
    img, shape = _open(path)
    affine = img.affine
    ornt = nib.orientations.io_orientation(affine)
    canon_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    canon_shape = tuple(int(shape[int(ax)]) for ax in np.argsort(ornt[:, 0]))
    return Grid(canon_shape, canon_affine, "".join(nib.aff2axcodes(affine)))  # type: ignore[arg-type]


def _validated_data(path: Path, dtype: type | np.dtype, allow_empty: bool) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Open ``path`` and return the image and its voxels in file order, validated (see load_volume)."""
    img, _ = _open(path)
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise InputError(path, f"file is truncated or corrupt ({_short(err)})") from None
    data = data.reshape(data.shape[:3]) if data.ndim > 3 else data
    if np.issubdtype(data.dtype, np.floating):
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        if n_bad:
            raise InputError(path, f"{n_bad} voxels are NaN or infinite")
    if not allow_empty and not np.any(data):
        raise InputError(path, "image is empty (all voxels are zero)")
    if np.issubdtype(np.dtype(dtype), np.integer) and np.issubdtype(data.dtype, np.floating):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(path, "label image has non-integer values")
        data = rounded
    return img, data.astype(dtype, copy=False)


def inspect_volume(
    path: str | Path,
    *,
    dtype: type | np.dtype = np.float32,
    allow_empty: bool = False,
) -> tuple[Grid, np.ndarray]:
    """Validate a file as :func:`load_volume` does, without reorienting the voxels.

    Returns the canonical-RAS grid and the voxels in *file* order — enough for checks whose
    answer does not depend on orientation (finite, non-empty, label counts), at the cost of one
    read instead of read + reorient + copy.
    """
    path = Path(path)
    _, data = _validated_data(path, dtype, allow_empty)
    return read_grid(path), data


def load_volume(
    path: str | Path,
    *,
    dtype: type | np.dtype = np.float32,
    allow_empty: bool = False,
) -> Volume:
    """Load a 3-D NIfTI file, reoriented to canonical RAS, and validate its voxels.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        dtype: dtype of the returned array (float32 for images; an integer type for labels).
        allow_empty: accept an all-zero volume (e.g. a segmentation without tumour).

    Raises:
        InputError: missing/unreadable/truncated file, not 3-D, zero/negative/absurd voxel size or a
            singular affine, NaN/Inf voxels, all-zero volume.
    """
    path = Path(path)
    img, data = _validated_data(path, dtype, allow_empty)
    ornt = nib.orientations.io_orientation(img.affine)
    canon = nib.orientations.apply_orientation(data, ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return Volume(np.ascontiguousarray(canon), affine)


def save_volume(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    dtype: type | np.dtype | None = None,
) -> Path:
    """Write ``array`` (X, Y, Z) with ``affine`` to ``path`` atomically (temp name, then rename)."""
    path = Path(path)
    if array.ndim != 3:
        raise ValueError(f"save_volume expects a 3-D array, got shape {array.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    data = array if dtype is None else array.astype(dtype, copy=False)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
