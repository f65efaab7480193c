"""Resampling onto a target voxel size: output grids and image/label resampling.

Images use linear or B-spline interpolation (B-spline overshoot is clipped to the input's range),
labels nearest neighbour, so label values are never mixed.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from vbiopsy.data.nifti import Grid, Volume
from vbiopsy.preprocess.sitk_bridge import from_sitk, resample, to_sitk


def grid_at_spacing(grid: Grid, spacing_mm: tuple[float, float, float]) -> Grid:
    """Grid covering the same field of view as ``grid`` (edge to edge), same orientation, with
    voxels of ``spacing_mm``; the shape is rounded up so nothing of the field of view is lost."""
    old = np.array(grid.spacing)
    new = np.asarray(spacing_mm, dtype=float)
    direction = grid.affine[:3, :3] / old
    extent = np.array(grid.shape) * old
    shape = np.maximum(np.ceil(extent / new - 1e-6).astype(int), 1)
    centre = grid.affine[:3, :3] @ ((np.array(grid.shape) - 1) / 2.0) + grid.affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = direction * new
    affine[:3, 3] = centre - affine[:3, :3] @ ((shape - 1) / 2.0)
    return Grid(tuple(int(s) for s in shape), affine)  # type: ignore[arg-type]


def resample_array(array: np.ndarray, affine: np.ndarray, grid: Grid, transform: sitk.Transform | None = None,
                   *, interpolation: str = "linear") -> np.ndarray:
    """``array`` (on ``affine``) resampled onto ``grid``; ``transform`` maps grid points to input points.

    Returns an (X, Y, Z) array of ``grid.shape`` with the input's dtype for ``nearest`` and float32
    otherwise; zero outside the input's field of view.
    """
    image = to_sitk(array if interpolation == "nearest" else array.astype(np.float32, copy=False), affine)
    out = from_sitk(resample(image, grid, transform, interpolation=interpolation)).array
    if interpolation == "bspline" and array.size:
        out = np.clip(out, float(array.min()), float(array.max()))
    return out


def resample_volume(volume: Volume, spacing_mm: tuple[float, float, float], *, is_label: bool = False,
                    interpolation: str = "linear") -> Volume:
    """``volume`` on a grid of the same field of view with voxels of ``spacing_mm``."""
    grid = grid_at_spacing(volume.grid, spacing_mm)
    method = "nearest" if is_label else interpolation
    return Volume(resample_array(volume.array, volume.affine, grid, interpolation=method), grid.affine)
