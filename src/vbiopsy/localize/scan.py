"""One scan prepared for localisation: validated images, brain mask, robust z maps, mirror maps.

:func:`prepare_scan` checks the user's arrays (3-D, finite, same shape, a usable brain mask, some
contrast inside it) and returns a :class:`Scan` whose derived maps are computed once, on first
use, and shared by the proposers and the refinement:

- ``z[m]``: robust z of modality ``m`` inside the brain, ``(I − median) / (1.4826 · MAD)``
  (the brain's own intensity distribution; 0 outside);
- ``smooth_z[m]``: the same smoothed by ``asymmetry_sigma_mm`` (noise, small misalignment);
- ``plane``: the estimated mid-sagittal plane (:mod:`.midline`);
- ``asymmetry[m]``: ``smooth_z − mirror(smooth_z)``, the excess over the contralateral point
  (0 where the mirror point leaves the brain).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage

from vbiopsy.errors import InputError
from vbiopsy.localize.brain import derive_brain_mask
from vbiopsy.localize.geometry import bounding_slices
from vbiopsy.localize.midline import MidPlane, estimate_midplane, mirror_maps

Spacing = tuple[float, float, float]

MAD_TO_SD = 1.4826
MIN_BRAIN_VOXELS = 64
GUIDE_OFFSET = 6.0
"""The symmetry guide is ``brain · (GUIDE_OFFSET + Σ clip(z, ±3))``: the outline dominates."""


def check_spacing(spacing_mm: Sequence[float]) -> Spacing:
    """Three finite positive voxel sizes in mm, or :class:`InputError`."""
    try:
        values = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise InputError("spacing_mm", f"expected 3 voxel sizes in mm, got {spacing_mm!r}") from None
    if len(values) != 3 or any(not math.isfinite(s) or s <= 0 for s in values):
        raise InputError("spacing_mm", f"expected 3 finite positive voxel sizes in mm, got {spacing_mm!r}")
    return values  # type: ignore[return-value]


def check_images(images: Mapping[str, np.ndarray], modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """The named ``modalities`` of ``images`` as float32 arrays, validated (3-D, finite, one shape)."""
    if not isinstance(images, Mapping) or not images:
        raise InputError("images", "expected a mapping of modality name to 3-D array, got nothing")
    lowered = {str(k).lower(): v for k, v in images.items()}
    missing = [m for m in modalities if m not in lowered]
    if missing:
        raise InputError("images", f"missing modality {missing[0]!r}; given: {', '.join(sorted(lowered))}")
    out: dict[str, np.ndarray] = {}
    shape: tuple[int, ...] | None = None
    for name in modalities:
        array = np.asarray(lowered[name])
        where = f"images[{name!r}]"
        if array.ndim != 3:
            raise InputError(where, f"expected a 3-D image (X, Y, Z), got shape {array.shape}")
        if min(array.shape) < 1:
            raise InputError(where, f"image has an empty dimension, shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InputError(where, f"expected a real-valued image, got dtype {array.dtype}")
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise InputError(where, f"{int(np.count_nonzero(~np.isfinite(array)))} voxels are NaN or infinite")
        if shape is not None and array.shape != shape:
            raise InputError(where, f"shape {array.shape} differs from images[{modalities[0]!r}] shape {shape}; "
                                    "resample the modalities onto one grid first")
        shape = array.shape
        if not array.any():
            raise InputError(where, "image is empty (all voxels are zero)")
        out[name] = array
    return out


def check_brain_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` as bool with the image shape and at least ``MIN_BRAIN_VOXELS`` voxels."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise InputError("brain_mask", f"shape {mask.shape} does not match the images' shape {tuple(shape)}")
    if mask.dtype != bool:
        if not (np.issubdtype(mask.dtype, np.number)) or not np.isfinite(mask).all():
            raise InputError("brain_mask", f"expected a binary mask, got dtype {mask.dtype} with non-finite values")
        mask = mask > 0.5
    n = int(np.count_nonzero(mask))
    if n == 0:
        raise InputError("brain_mask", "mask is empty (no voxel is inside the brain)")
    if n < MIN_BRAIN_VOXELS:
        raise InputError("brain_mask", f"mask has only {n} voxels (need at least {MIN_BRAIN_VOXELS})")
    return mask


def robust_z(image: np.ndarray, brain: np.ndarray, where: str) -> tuple[np.ndarray, dict[str, float]]:
    """Robust z of ``image`` inside ``brain`` (0 outside) and the (median, scale) used.

    The scale is 1.4826 · MAD, or the IQR / 1.349, or the standard deviation when the former are 0
    (images with many identical values). An image without any variation inside the brain is
    all background and raises :class:`InputError`.
    """
    values = image[brain].astype(np.float64)
    median = float(np.median(values))
    scale = MAD_TO_SD * float(np.median(np.abs(values - median)))
    if scale <= 0:
        q1, q3 = np.percentile(values, [25, 75])
        scale = float(q3 - q1) / 1.349
    if scale <= 0:
        scale = float(values.std())
    if scale <= 0:
        raise InputError(where, f"image is all background: constant ({median:g}) inside the brain mask")
    out = np.zeros(image.shape, dtype=np.float32)
    out[brain] = ((values - median) / scale).astype(np.float32)
    return out, {"median": median, "scale": scale}


@dataclass(eq=False)
class Scan:
    """Validated images (float32, one shape), voxel ``spacing`` (mm) and boolean ``brain`` mask.

    When the scan is a crop of a larger grid, ``window`` are its slices in that grid of
    ``full_shape`` (see :meth:`paste`).
    """

    images: dict[str, np.ndarray]
    spacing: Spacing
    brain: np.ndarray
    asymmetry_sigma_mm: float = 1.5
    window: tuple[slice, slice, slice] | None = None
    full_shape: tuple[int, int, int] | None = None
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.brain.shape)  # type: ignore[return-value]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.images)

    @property
    def offset(self) -> tuple[int, int, int]:
        """Voxel index of this scan's first voxel on the full grid."""
        return (0, 0, 0) if self.window is None else tuple(w.start for w in self.window)  # type: ignore[return-value]

    def paste(self, volume: np.ndarray, fill: float | bool = 0) -> np.ndarray:
        """``volume`` (on this scan's grid) placed on the full grid, ``fill`` elsewhere."""
        if self.window is None or self.full_shape is None:
            return volume
        out = np.full(self.full_shape, fill, dtype=volume.dtype)
        out[self.window] = volume
        return out

    def sigma_vox(self, sigma_mm: float) -> tuple[float, float, float]:
        """A Gaussian sigma in mm as voxels per axis."""
        return tuple(sigma_mm / s for s in self.spacing)  # type: ignore[return-value]

    @cached_property
    def z(self) -> dict[str, np.ndarray]:
        out = {}
        for name, image in self.images.items():
            out[name], self.stats[name] = robust_z(image, self.brain, f"images[{name!r}]")
        return out

    @cached_property
    def smooth_z(self) -> dict[str, np.ndarray]:
        if self.asymmetry_sigma_mm <= 0:
            return dict(self.z)
        sigma = self.sigma_vox(self.asymmetry_sigma_mm)
        return {m: np.where(self.brain, ndimage.gaussian_filter(z, sigma), 0).astype(np.float32)
                for m, z in self.z.items()}

    @cached_property
    def plane(self) -> MidPlane:
        guide = np.full(self.shape, GUIDE_OFFSET, dtype=np.float32)
        for z in self.z.values():
            guide += np.clip(z, -3.0, 3.0)
        guide *= self.brain
        return estimate_midplane(guide, self.brain, self.spacing)

    @cached_property
    def _mirrored(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return mirror_maps(self.smooth_z, self.brain, self.plane, self.spacing)

    @property
    def mirror_valid(self) -> np.ndarray:
        """Brain voxels whose mirror point is in the brain too."""
        return self._mirrored[1]

    @cached_property
    def asymmetry(self) -> dict[str, np.ndarray]:
        mirrored, valid = self._mirrored
        return {m: np.where(valid, self.smooth_z[m] - mirrored[m], 0).astype(np.float32) for m in self.images}


def prepare_scan(images: Mapping[str, np.ndarray], spacing_mm: Sequence[float], *,
                 brain_mask: np.ndarray | None = None, modalities: Sequence[str] = ("t1c", "flair"),
                 asymmetry_sigma_mm: float = 1.5, crop_margin_mm: float | None = None) -> Scan:
    """Validate the user's arrays and return a :class:`Scan` (derived maps computed lazily).

    With ``crop_margin_mm`` the scan is cut to the brain's bounding box plus that margin (all
    work then scales with the brain, not the field of view); :meth:`Scan.paste` maps back.

    Raises:
        InputError: missing modality, non-3-D/NaN/empty image, different shapes, bad spacing,
            empty or mismatched brain mask, an image without contrast inside the brain.
    """
    spacing = check_spacing(spacing_mm)
    arrays = check_images(images, tuple(modalities))
    shape = next(iter(arrays.values())).shape
    if brain_mask is None:
        brain = derive_brain_mask(arrays, spacing)
        if np.count_nonzero(brain) < MIN_BRAIN_VOXELS:
            raise InputError("images", "no brain found: the images are all background "
                                       "(no contrast to threshold); pass brain_mask or check the inputs")
    else:
        brain = check_brain_mask(brain_mask, shape)
    window = None
    if crop_margin_mm is not None:
        margin = tuple(int(np.ceil(crop_margin_mm / s)) for s in spacing)
        window = bounding_slices(brain, margin)  # type: ignore[arg-type]
        arrays = {m: a[window] for m, a in arrays.items()}
        brain = brain[window]
    scan = Scan(arrays, spacing, brain, asymmetry_sigma_mm, window, tuple(int(s) for s in shape))  # type: ignore[arg-type]
    _ = scan.z  # validates contrast inside the brain now, with a clear message
    return scan
