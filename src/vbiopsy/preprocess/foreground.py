"""Input checks before preprocessing: the image has a foreground, and fields of view overlap.

A modality whose field of view does not overlap the reference's would be resampled into an empty
(all-zero) volume without any error; an all-background image would give an empty brain mask and a
z-score of noise. Both are user errors and are raised as :class:`InputError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vbiopsy.data.nifti import Grid, Volume
from vbiopsy.errors import InputError

FOREGROUND_FRACTION = 1e-3
"""Least fraction of voxels clearly above the background for an image to count as having content."""


def check_foreground(volume: Volume, path: str | Path, modality: str) -> None:
    """Raise if ``volume`` is all background: constant, or with almost no voxel above its background.

    The background level is the 5th percentile; foreground is anything above it by more than 5 %
    of the 99.9th-percentile range.
    """
    array = volume.array
    low, high = np.percentile(array, [5.0, 99.9])
    if not high > low:
        lo, hi = float(array.min()), float(array.max())
        if hi <= lo:
            raise InputError(path, f"{modality} image is all background (every voxel is {lo:g})")
        high = hi
    level = low + 0.05 * (high - low)
    fraction = float(np.count_nonzero(array > level)) / array.size
    if fraction < FOREGROUND_FRACTION:
        raise InputError(path, f"{modality} image is all background (only {fraction:.2%} of voxels above "
                               f"the background level {level:g})")


def fov_overlap(moving: Grid, reference: Grid, samples: int = 12) -> float:
    """Fraction of ``moving``'s field of view (sampled on a ``samples``³ lattice of voxel centres)
    that falls inside ``reference``'s field of view (world coordinates, mm)."""
    axes = [np.linspace(0, s - 1, min(samples, s)) for s in moving.shape]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    world = index @ moving.affine[:3, :3].T + moving.affine[:3, 3]
    inv = np.linalg.inv(reference.affine)
    ref_index = world @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((ref_index > -0.5) & (ref_index < np.array(reference.shape) - 0.5), axis=1)
    return float(np.mean(inside))


def check_overlap(moving: Grid, reference: Grid, *, path: str | Path, modality: str, reference_name: str,
                  minimum: float) -> float:
    """Raise unless at least ``minimum`` of ``moving``'s field of view lies inside the reference's."""
    overlap = fov_overlap(moving, reference)
    if overlap < minimum:
        raise InputError(path, f"the field of view of {modality} does not overlap the reference {reference_name} "
                               f"({overlap:.0%} inside it, at least {minimum:.0%} needed)")
    return overlap
