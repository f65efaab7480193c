"""Grid helpers in millimetres: ellipsoidal footprints, padded bounding boxes, lesion centres."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Spacing = tuple[float, float, float]


def ball(radius_mm: float, spacing: Spacing) -> np.ndarray:
    """Boolean ellipsoidal footprint of ``radius_mm`` on a grid of ``spacing`` (at least one voxel)."""
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    return np.asarray(dist2 <= radius_mm**2 + 1e-9)


def bounding_slices(mask: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty ``mask`` grown by ``margin`` voxels per axis, clipped to the array."""
    spans = []
    for axis, (m, n) in enumerate(zip(margin, mask.shape)):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.nonzero(mask.any(axis=other))[0]
        if hit.size == 0:
            raise ValueError("bounding_slices needs a non-empty mask")
        spans.append(slice(max(int(hit[0]) - int(m), 0), min(int(hit[-1]) + int(m) + 1, int(n))))
    return spans[0], spans[1], spans[2]


def main_component_centre(weights: np.ndarray) -> np.ndarray | None:
    """Weighted centroid (voxel coordinates, shape (3,)) of the heaviest connected part of ``weights > 0``.

    The connected component (26-connectivity) with the largest total weight wins, so a small
    stray blob cannot pull the centre between two lesions; ``None`` when ``weights`` is all zero.
    """
    support = weights > 0
    if not support.any():
        return None
    labels, n = ndimage.label(support, structure=np.ones((3, 3, 3), bool))
    index = np.arange(1, n + 1)
    best = int(index[np.argmax(ndimage.sum_labels(weights, labels, index))])
    return np.asarray(ndimage.center_of_mass(np.where(labels == best, weights, 0)), dtype=float)
