"""ASLNet region of interest: brightest-voxel centroid → a cube of fixed side in mm, recorded exactly.

The ASLNet paper approximates the tumour by the centroid of the 0.01 % brightest ASL voxels and
crops a 70 mm cube around it (``../shared/reference/aslnet-reference-code-notes.md`` §2.1, §2.3).
This module keeps that rule as the default and fixes the reference code's defects (§8.2):

- the cube has ``round(side_mm / spacing)`` voxels per axis and its centre is the lattice point
  nearest to the centroid, so it is centred to within half a voxel with no systematic shift
  (exactly centred when the centroid lies on that lattice); the reference code trims 71-voxel
  boxes at the high end and is always 0.5–1 voxel low;
- a cube that leaves the volume is padded on the side where it leaves, so the centroid stays at
  the centre (the reference clips the box and re-pads it symmetrically, moving the tumour);
- the brightest-voxel search can be restricted to a brain mask (bright vessels, skull remnants or
  artefacts outside it no longer pull the cube away);
- the box is recorded as a :class:`RoiBox`, so maps computed on the cube go back to the source
  grid exactly with :func:`paste_back`; an explicit centre (e.g. from a localiser) is accepted.

Arrays are voxel-indexed ``(X, Y, Z)`` on the grid described by ``affine`` (voxel → mm).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from vbiopsy.errors import ConfigError, InputError

DEFAULT_SIDE_MM = 70.0
"""Side of the ROI cube in mm (paper and reference code)."""
DEFAULT_TOP_PCT = 0.01
"""Percentage (not fraction) of the searched voxels taken as "brightest": 0.01 means 0.01 %."""
BACKGROUND_ZERO_FRACTION = 0.05
"""If more than this fraction of voxels is exactly 0, the brain mask is ``volume != 0`` (§2.1)."""
BACKGROUND_PERCENTILE = 0.5
"""Otherwise the mask is ``volume > P0.5`` over all voxels (§2.1, the paper's "≈0.5 %")."""

Triple = tuple[float, float, float]
Shape3 = tuple[int, int, int]


def check_volume(array: np.ndarray, where: str | Path = "volume") -> np.ndarray:
    """Return ``array`` if it is a finite, non-empty 3-D real array; else raise :class:`InputError`."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(where, f"expected a 3-D image (X, Y, Z), got shape {array.shape}")
    if array.size == 0:
        raise InputError(where, f"image has an empty dimension, shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(where, f"expected a real-valued image, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(where, f"{n_bad} voxels are NaN or infinite")
    if not array.any():
        raise InputError(where, "image is empty (all voxels are zero)")
    return array


def check_mask(mask: np.ndarray, shape: tuple[int, ...], where: str | Path = "brain_mask") -> np.ndarray:
    """Return ``mask`` as bool if it has ``shape`` and at least one voxel; else raise :class:`InputError`."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise InputError(where, f"mask shape {mask.shape} does not match the image shape {tuple(shape)}")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise InputError(where, "mask is empty (no voxel is inside)")
    return mask


def background_mask(
    array: np.ndarray,
    *,
    zero_fraction: float = BACKGROUND_ZERO_FRACTION,
    percentile: float = BACKGROUND_PERCENTILE,
) -> np.ndarray:
    """Brain/foreground mask as in the reference code (§2.1); bool array of ``array.shape``.

    Skull-stripped volumes (more than ``zero_fraction`` of voxels exactly 0) give ``array != 0``;
    otherwise the voxels above the ``percentile``-th percentile of all voxels. The result may be
    empty (a constant image); callers that need a non-empty mask check it.
    """
    if np.count_nonzero(array == 0) > zero_fraction * array.size:
        return array != 0
    return array > np.percentile(array, percentile)


def brightest_centroid(array: np.ndarray, *, top_pct: float = DEFAULT_TOP_PCT,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """Unweighted centroid (voxel coordinates, shape (3,)) of the ``top_pct`` % brightest voxels.

    The searched voxels are the whole volume (the paper's rule) or those in ``mask``. The
    brightest set is every searched voxel at least as bright as the ``ceil(top_pct/100 · n)``-th
    brightest one (ties included, at least one voxel).
    """
    check_top_pct(top_pct)
    values = array[mask] if mask is not None else array.ravel()
    k = max(1, math.ceil(top_pct / 100.0 * values.size))
    # partitioning at the maximum too is ~10x faster on volumes that are mostly exact zeros
    threshold = np.partition(values, (values.size - k, values.size - 1))[values.size - k]
    bright = array >= threshold
    if mask is not None:
        bright &= mask
    return np.argwhere(bright).mean(axis=0)


def check_top_pct(top_pct: float) -> None:
    """Raise :class:`ConfigError` unless ``0 < top_pct <= 100`` (a percentage)."""
    if not (_is_real(top_pct) and 0 < top_pct <= 100):
        raise ConfigError(f"top_pct must be a percentage in (0, 100], got {top_pct!r}")


def _is_real(value: object) -> bool:
    """True for a finite real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def spacing_of(affine: np.ndarray) -> Triple:
    """Voxel size in mm along each axis of a 4×4 voxel → mm affine."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class RoiBox:
    """An axis-aligned voxel box on a source grid, possibly reaching outside it.

    Attributes:
        centre_vox: the requested centre (centroid or given centre), voxel coordinates of the source grid.
        start, stop: half-open voxel index range per axis; may be < 0 or > ``source_shape`` (padding).
        source_shape: shape (X, Y, Z) of the source grid.
        affine: 4×4 voxel → mm affine of the source grid.
        out_shape: if set, the cube was resampled to this grid spanning the box's extent (see
            :meth:`out_affine`); maps of this shape are accepted by :func:`paste_back`.
    """

    centre_vox: Triple
    start: Shape3
    stop: Shape3
    source_shape: Shape3
    affine: np.ndarray
    out_shape: Shape3 | None = None

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ConfigError(f"RoiBox affine must be a finite 4x4 matrix, got {self.affine!r}")
        affine.flags.writeable = False
        object.__setattr__(self, "affine", affine)
        for name in ("centre_vox", "start", "stop", "source_shape", "out_shape"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 3:
                raise ConfigError(f"RoiBox {name} must have 3 entries, got {value!r}")
            cast = float if name == "centre_vox" else int
            object.__setattr__(self, name, tuple(cast(v) for v in value))
        if any(a >= b for a, b in zip(self.start, self.stop)):
            raise ConfigError(f"RoiBox start {self.start} must be below stop {self.stop} on every axis")
        if any(n < 1 for n in self.source_shape) or (self.out_shape and any(n < 1 for n in self.out_shape)):
            raise ConfigError(f"RoiBox shapes must be positive, got {self.source_shape} / {self.out_shape}")
        if any(b <= 0 or a >= n for a, b, n in zip(self.start, self.stop, self.source_shape)):
            raise ConfigError(f"RoiBox {self.start}..{self.stop} does not overlap the grid {self.source_shape}")

    @property
    def shape(self) -> Shape3:
        """Voxels per axis of the cropped cube, on the source grid."""
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def spacing(self) -> Triple:
        """Source voxel size in mm per axis."""
        return spacing_of(self.affine)

    @property
    def extent_mm(self) -> Triple:
        """Physical side of the cube per axis in mm (``shape × spacing``)."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    @property
    def centre_mm(self) -> Triple:
        """The requested centre in mm (world coordinates of the source affine)."""
        return _to_mm(self.affine, self.centre_vox)

    @property
    def box_centre_vox(self) -> Triple:
        """Geometric centre of the box in source voxel coordinates."""
        return tuple((a + b - 1) / 2.0 for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def offset_vox(self) -> Triple:
        """Box centre minus requested centre, in voxels; each entry is within [-0.5, 0.5]."""
        return tuple(b - c for b, c in zip(self.box_centre_vox, self.centre_vox))  # type: ignore[return-value]

    @property
    def pad_before(self) -> Shape3:
        """Voxels of the box below index 0 per axis (filled, not read from the volume)."""
        return tuple(max(0, -a) for a in self.start)  # type: ignore[return-value]

    @property
    def pad_after(self) -> Shape3:
        """Voxels of the box beyond the last index per axis."""
        return tuple(max(0, b - n) for b, n in zip(self.stop, self.source_shape))  # type: ignore[return-value]

    @property
    def source_slices(self) -> tuple[slice, slice, slice]:
        """Slices of the source grid covered by the box (its in-volume part)."""
        return tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(self.start, self.stop, self.source_shape))  # type: ignore[return-value]

    @property
    def crop_slices(self) -> tuple[slice, slice, slice]:
        """Slices of the cropped cube that hold in-volume voxels (the rest is padding)."""
        return tuple(slice(lo.start - a, lo.stop - a) for lo, a in zip(self.source_slices, self.start))  # type: ignore[return-value]

    @property
    def crop_affine(self) -> np.ndarray:
        """4×4 voxel → mm affine of the cropped cube (its voxel 0 is source voxel ``start``)."""
        shift = np.eye(4)
        shift[:3, 3] = self.start
        return self.affine @ shift

    @property
    def out_affine(self) -> np.ndarray:
        """4×4 voxel → mm affine of the resampled cube (``crop_affine`` when not resampled)."""
        return self.crop_affine @ _out_to_box(self.shape, self.out_shape or self.shape)

    def contains_mm(self, point_mm: Sequence[float]) -> bool:
        """True if the world point lies inside the box (voxel extents, ±0.5 voxel around centres)."""
        vox = np.linalg.solve(self.affine, np.append(np.asarray(point_mm, float), 1.0))[:3]
        return bool(all(a - 0.5 <= v < b - 0.5 for v, a, b in zip(vox, self.start, self.stop)))

    def with_out_shape(self, out_shape: Sequence[int] | None) -> RoiBox:
        """The same box, recording that the cube was resampled to ``out_shape``."""
        return replace(self, out_shape=None if out_shape is None else tuple(out_shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (lists of numbers), inverse of :meth:`from_dict`."""
        return {"centre_vox": list(self.centre_vox), "start": list(self.start), "stop": list(self.stop),
                "source_shape": list(self.source_shape), "affine": self.affine.tolist(),
                "out_shape": None if self.out_shape is None else list(self.out_shape),
                "centre_mm": list(self.centre_mm), "spacing": list(self.spacing)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RoiBox:
        """Rebuild a box written by :meth:`to_dict` (derived entries are ignored)."""
        out = record.get("out_shape")
        return cls(tuple(record["centre_vox"]), tuple(record["start"]), tuple(record["stop"]),  # type: ignore[arg-type]
                   tuple(record["source_shape"]), np.asarray(record["affine"], float),  # type: ignore[arg-type]
                   None if out is None else tuple(out))  # type: ignore[arg-type]


def _to_mm(affine: np.ndarray, vox: Sequence[float]) -> Triple:
    return tuple(float(v) for v in (affine @ np.append(np.asarray(vox, float), 1.0))[:3])  # type: ignore[return-value]


def _out_to_box(box_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """4×4 map from resampled-cube voxels to box voxels; both grids span the same extent."""
    scale = np.asarray(box_shape, float) / np.asarray(out_shape, float)
    matrix = np.diag(np.append(scale, 1.0))
    matrix[:3, 3] = 0.5 * scale - 0.5
    return matrix


def check_positive_mm(value: float, name: str = "side_mm") -> None:
    """Raise :class:`ConfigError` naming ``name`` unless ``value`` is a finite positive length (mm)."""
    if not (_is_real(value) and value > 0):
        raise ConfigError(f"{name} must be a positive length in mm, got {value!r}")


def roi_box(shape: Sequence[int], affine: np.ndarray, centre_vox: Sequence[float],
            side_mm: float = DEFAULT_SIDE_MM) -> RoiBox:
    """The cube of side ``side_mm`` centred on ``centre_vox`` (voxel coordinates) of a grid.

    Each axis gets ``max(1, round(side_mm / spacing))`` voxels; the box's centre is the lattice
    point nearest ``centre_vox`` (integers for an odd count, half-integers for an even one), ties
    rounded up. The centre must lie in the volume (within half a voxel of its first/last voxel).
    """
    check_positive_mm(side_mm)
    shape = tuple(int(n) for n in shape)
    centre = np.asarray(centre_vox, dtype=float)
    if centre.shape != (3,) or not np.isfinite(centre).all():
        raise ConfigError(f"ROI centre must be 3 finite voxel coordinates, got {centre_vox!r}")
    if any(not -0.5 <= c <= n - 0.5 for c, n in zip(centre, shape)):
        raise ConfigError(f"ROI centre {tuple(np.round(centre, 2))} (voxels) lies outside the volume of shape {shape}")
    counts = [max(1, round(side_mm / s)) for s in spacing_of(affine)]
    start = [math.floor(c - (n - 1) / 2.0 + 0.5) for c, n in zip(centre, counts)]
    stop = [a + n for a, n in zip(start, counts)]
    return RoiBox(tuple(centre), tuple(start), tuple(stop), shape, affine)  # type: ignore[arg-type]


def compute_roi(
    array: np.ndarray,
    affine: np.ndarray,
    *,
    side_mm: float = DEFAULT_SIDE_MM,
    top_pct: float = DEFAULT_TOP_PCT,
    search_mask: np.ndarray | None = None,
    centre_mm: Sequence[float] | None = None,
    where: str | Path = "volume",
) -> RoiBox:
    """The ASLNet ROI of a volume: cube of ``side_mm`` around the brightest-voxel centroid.

    Args:
        array: (X, Y, Z) image, e.g. ASL CBF in mL/100 g/min.
        affine: its 4×4 voxel → mm affine.
        side_mm: cube side in mm.
        top_pct: percentage of searched voxels taken as brightest (0.01 = 0.01 %).
        search_mask: restrict the brightest-voxel search to this mask (e.g. the brain); ``None``
            searches the whole volume, as the paper does.
        centre_mm: use this world point (mm, e.g. from a localiser) as the centre instead.
        where: name for error messages (the file the image came from).
    """
    check_positive_mm(side_mm)
    check_top_pct(top_pct)
    array = check_volume(array, where)
    if centre_mm is None:
        mask = None if search_mask is None else check_mask(search_mask, array.shape, "search_mask")
        centre_vox = brightest_centroid(array, top_pct=top_pct, mask=mask)
    else:
        point = np.asarray(centre_mm, dtype=float)
        if point.shape != (3,) or not np.isfinite(point).all():
            raise ConfigError(f"centre_mm must be 3 finite coordinates in mm, got {centre_mm!r}")
        centre_vox = np.linalg.solve(np.asarray(affine, float), np.append(point, 1.0))[:3]
        if any(not -0.5 <= c <= n - 0.5 for c, n in zip(centre_vox, array.shape)):
            raise ConfigError(f"centre_mm={tuple(point.tolist())} lies outside the volume "
                              f"(voxel {tuple(np.round(centre_vox, 1).tolist())}, shape {array.shape})")
    return roi_box(array.shape, affine, centre_vox, side_mm)


def crop(array: np.ndarray, box: RoiBox, fill: float = 0.0) -> np.ndarray:
    """Cut ``box`` out of ``array`` (..., X, Y, Z) → (..., *box.shape); outside voxels get ``fill``."""
    if tuple(array.shape[-3:]) != box.source_shape:
        raise InputError("crop", f"array spatial shape {array.shape[-3:]} != box source shape {box.source_shape}")
    out = np.full((*array.shape[:-3], *box.shape), fill, dtype=array.dtype)
    out[(..., *box.crop_slices)] = array[(..., *box.source_slices)]
    return out


def paste_back(crop_map: np.ndarray, box: RoiBox, fill: float = 0.0) -> np.ndarray:
    """Place a map computed on the cube back on the source grid → (..., *box.source_shape).

    A map of ``box.shape`` is placed exactly (inverse of :func:`crop` on the in-volume part); a
    map of ``box.out_shape`` (a resampled cube) is first resampled linearly back onto the box grid.
    Source voxels outside the box get ``fill``.
    """
    spatial = tuple(crop_map.shape[-3:])
    if spatial != box.shape:
        if box.out_shape is None or spatial != box.out_shape:
            raise InputError("paste_back", f"map shape {spatial} matches neither the box {box.shape} "
                                           f"nor its resampled grid {box.out_shape}")
        crop_map = resample_cube(crop_map, box.shape)
    out = np.full((*crop_map.shape[:-3], *box.source_shape), fill, dtype=crop_map.dtype)
    out[(..., *box.source_slices)] = crop_map[(..., *box.crop_slices)]
    return out


def resample_cube(cube: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Linearly resample (..., X, Y, Z) onto ``out_shape`` covering the same box (edges replicated).

    Voxel edges of both grids coincide at the box faces, so resampling to ``out_shape`` and back
    uses the same rule in both directions.
    """
    out_shape = tuple(int(n) for n in out_shape)
    matrix = _out_to_box(cube.shape[-3:], out_shape)
    flat = cube.reshape(-1, *cube.shape[-3:])
    out = np.stack([ndimage.affine_transform(vol, np.diag(matrix)[:3], offset=matrix[:3, 3],
                                             output_shape=out_shape, order=1, mode="nearest")
                    for vol in flat])
    return out.reshape(*cube.shape[:-3], *out_shape)
