"""Binary morphology in millimetres (Euclidean distance maps, exact for any voxel size).

Structuring elements are balls of a radius in mm, so the same parameters mean the same thing on a
1 mm grid, a 2 mm grid or a thick-slice grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

Spacing = tuple[float, float, float]


def distance_to(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest voxel of ``mask`` (0 inside; +inf if empty).

    SimpleITK's Maurer distance map (exact Euclidean, multi-threaded) on a grid of ``spacing``.
    """
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return np.maximum(sitk.GetArrayViewFromImage(distance).transpose(2, 1, 0), 0.0)


def dilate(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask``."""
    if radius_mm <= 0 or not mask.any():
        return mask.astype(bool, copy=True)
    return distance_to(mask.astype(bool), spacing) <= radius_mm


def erode(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Voxels of ``mask`` farther than ``radius_mm`` from its outside (outside the array counts as outside)."""
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    outside = np.pad(~mask.astype(bool), 1, constant_values=True)
    return ~dilate(outside, radius_mm, spacing)[1:-1, 1:-1, 1:-1]


def opening(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Erode then dilate: removes parts thinner than ~2 × ``radius_mm`` (bridges, specks)."""
    return dilate(erode(mask, radius_mm, spacing), radius_mm, spacing)


def closing(mask: np.ndarray, radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Dilate then erode: fills gaps and notches narrower than ~2 × ``radius_mm``."""
    if radius_mm <= 0:
        return mask.astype(bool, copy=True)
    pad = int(np.ceil(radius_mm / min(spacing))) + 1
    padded = np.pad(mask.astype(bool), pad)
    closed = erode(dilate(padded, radius_mm, spacing), radius_mm, spacing)
    return closed[pad:-pad, pad:-pad, pad:-pad]


def largest_component(mask: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """The largest 6-connected component of ``mask`` (or the one overlapping ``seed`` most)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    weights = seed.astype(bool) if seed is not None and np.any(seed & mask) else mask
    sizes = np.bincount(labels[weights].ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed cavities in 3-D, then in every axial slice (ventricles open at a slice edge)."""
    filled = ndimage.binary_fill_holes(mask)
    for k in range(filled.shape[2]):
        filled[:, :, k] = ndimage.binary_fill_holes(filled[:, :, k])
    return filled
