"""Rigid and affine registration with SimpleITK (Mattes mutual information, multi-resolution).

Transforms map points of the *fixed* image to the *moving* image (LPS mm), which is what
resampling the moving image onto the fixed grid needs. The pyramid is built in physical units:
level ``k`` resamples both images to isotropic voxels of ``level_spacing_mm[k]`` (never finer than
the fixed image's finest spacing) after smoothing the finer axes with σ = half that size, so
thick-slice scans (0.9 × 0.9 × 5.5 mm) are treated the same as isotropic ones.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from vbiopsy.data.nifti import Grid
from vbiopsy.preprocess.config import _RegistrationOptions
from vbiopsy.preprocess.sitk_bridge import grid_image, grid_of, transform_to_record

Kind = Literal["rigid", "affine"]


def isotropic_grid(grid: Grid, spacing_mm: float) -> Grid:
    """Grid with the same orientation and field of view as ``grid`` and isotropic ``spacing_mm`` voxels."""
    direction = grid.affine[:3, :3] / np.array(grid.spacing)
    extent = np.array(grid.shape) * np.array(grid.spacing)
    shape = np.maximum(np.ceil(extent / spacing_mm - 1e-6).astype(int), 1)
    first_edge = grid.affine[:3, 3] - direction @ (np.array(grid.spacing) / 2.0)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing_mm
    affine[:3, 3] = first_edge + direction @ np.full(3, spacing_mm / 2.0)
    return Grid(tuple(int(s) for s in shape), affine)  # type: ignore[arg-type]


def pyramid_level(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` smoothed to ``spacing_mm`` resolution and resampled to isotropic voxels of that size.

    Only axes finer than ``spacing_mm`` are smoothed (σ = half the new voxel size), so a thick
    slice axis is not blurred further.
    """
    steps = np.asarray(image.GetSpacing(), dtype=float)  # x, y, z
    sigma_vox = np.where(steps < spacing_mm * 0.99, 0.5 * spacing_mm / steps, 0.0)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if np.any(sigma_vox > 0):
        array = ndimage.gaussian_filter(array, sigma_vox[::-1].tolist(), mode="nearest")
    smoothed = sitk.GetImageFromArray(array)
    smoothed.CopyInformation(image)
    target = isotropic_grid(grid_of(image), spacing_mm)
    return sitk.Resample(smoothed, grid_image(target), sitk.Transform(3, sitk.sitkIdentity),
                         sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def center_of_mass(mask: sitk.Image) -> tuple[float, float, float]:
    """Physical centre (LPS mm) of the nonzero voxels of ``mask`` (its grid centre if empty)."""
    array = sitk.GetArrayViewFromImage(mask)
    idx = np.argwhere(array > 0)
    if idx.size == 0:
        centre = (np.array(mask.GetSize()) - 1) / 2.0
    else:
        centre = idx.mean(axis=0)[::-1]
    return mask.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre])


def initial_rigid(fixed_mask: sitk.Image, moving_mask: sitk.Image) -> sitk.Euler3DTransform:
    """Rigid transform (no rotation) that maps the fixed mask's centre of mass onto the moving one's."""
    centre_f = np.array(center_of_mass(fixed_mask))
    centre_m = np.array(center_of_mass(moving_mask))
    tx = sitk.Euler3DTransform()
    tx.SetCenter(centre_f.tolist())
    tx.SetTranslation((centre_m - centre_f).tolist())
    return tx


def to_affine(rigid: sitk.Transform) -> sitk.AffineTransform:
    """The same mapping as ``rigid`` (any matrix-offset transform) as an :class:`sitk.AffineTransform`."""
    src = rigid.Downcast()
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(src.GetMatrix())
    tx.SetTranslation(src.GetTranslation())
    tx.SetCenter(src.GetCenter())
    return tx


SEARCH_SPACING_MM = 8.0
SEARCH_GRID: tuple[tuple[int, ...], tuple[float, ...]] = ((3, 1, 1, 0, 1, 1),
                                                        (np.pi / 12, np.pi / 12, np.pi / 12, 16.0, 16.0, 16.0))
"""Exhaustive start search: steps either side and step size per Euler parameter (rx, ry, rz in rad,
tx, ty, tz in mm): pitch ±45°, roll and yaw ±15°, antero-posterior and vertical shifts ±16 mm — the
head tilts and field-of-view offsets of clinical scans that a local optimiser does not escape."""


def search_start(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Euler3DTransform, *,
                 fixed_mask: sitk.Image | None = None, bins: int = 32) -> tuple[sitk.Euler3DTransform, float]:
    """Best rigid start on a coarse grid of rotations and shifts around ``initial`` (8 mm images).

    Returns the best transform and its metric (Mattes MI, lower is better).
    """
    fixed_c = pyramid_level(fixed, SEARCH_SPACING_MM)
    moving_c = pyramid_level(moving, max(SEARCH_SPACING_MM, min(moving.GetSpacing())))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(sitk.Resample(fixed_mask, fixed_c, sitk.Transform(3, sitk.sitkIdentity),
                                             sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    steps, sizes = SEARCH_GRID
    reg.SetOptimizerAsExhaustive(list(steps), stepLength=1.0)
    reg.SetOptimizerScales(list(sizes))
    found: list[tuple[float, tuple[float, ...]]] = []
    reg.AddCommand(sitk.sitkIterationEvent,
                   lambda: found.append((reg.GetMetricValue(), tuple(reg.GetOptimizerPosition()))))
    reg.SetInitialTransform(sitk.Euler3DTransform(initial), inPlace=False)
    reg.Execute(fixed_c, moving_c)
    metric, params = min(found)
    best = sitk.Euler3DTransform(initial)
    best.SetParameters(params)
    return best, float(metric)


MIN_METRIC_SAMPLES = 20000
"""Least number of metric samples per level: small images are sampled more densely than
``sampling_fraction`` says, since a few thousand samples make mutual information too noisy."""


def _method(options: _RegistrationOptions, voxels: int) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(options.histogram_bins))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    fraction = min(1.0, max(float(options.sampling_fraction), MIN_METRIC_SAMPLES / max(voxels, 1)))
    reg.SetMetricSamplingPercentage(fraction, int(options.seed))  # seed ≥ 1: reproducible (0 = clock)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                 numberOfIterations=int(options.iterations),
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    return reg


def register(fixed: sitk.Image, moving: sitk.Image, kind: Kind, options: _RegistrationOptions, *,
             initial: sitk.Transform, fixed_mask: sitk.Image | None = None) -> tuple[sitk.Transform, dict[str, Any]]:
    """Optimise a ``kind`` transform (starting at ``initial``) mapping ``fixed`` points to ``moving``.

    Returns the transform (``Euler3DTransform`` or ``AffineTransform``) and a JSON-able report:
    per level the voxel size, iterations, final metric and stop condition.
    """
    start_tx = initial.Downcast()
    if kind == "rigid":
        if not isinstance(start_tx, sitk.Euler3DTransform):
            raise TypeError(f"a rigid registration starts from an Euler3DTransform, got {start_tx.GetName()}")
        current: sitk.Transform = sitk.Euler3DTransform(start_tx)
    else:
        current = to_affine(start_tx)
    finest = min(fixed.GetSpacing())
    spacings = list(dict.fromkeys(max(float(s), finest) for s in options.level_spacing_mm))
    levels = []
    start = time.perf_counter()
    for spacing in spacings:
        fixed_l = pyramid_level(fixed, spacing)
        moving_l = pyramid_level(moving, max(spacing, min(moving.GetSpacing())))
        voxels = int(np.prod(fixed_l.GetSize()))
        if fixed_mask is not None:
            mask_l = sitk.Resample(fixed_mask, fixed_l, sitk.Transform(3, sitk.sitkIdentity),
                                   sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask_l)))
        reg = _method(options, voxels)
        if fixed_mask is not None:
            reg.SetMetricFixedMask(mask_l)
        reg.SetInitialTransform(current, inPlace=True)
        reg.Execute(fixed_l, moving_l)
        levels.append({"spacing_mm": round(spacing, 3), "iterations": int(reg.GetOptimizerIteration()),
                       "metric": float(reg.GetMetricValue()),
                       "stop": reg.GetOptimizerStopConditionDescription()[:200]})
    report = {"kind": kind, "levels": levels, "seconds": round(time.perf_counter() - start, 3),
              "transform": transform_to_record(current)}
    return current, report
