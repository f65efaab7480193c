"""N4 bias-field correction with SimpleITK.

The field is fitted on a copy shrunk by ``shrink_factor`` (N4 is smooth by construction, so the
fit barely changes while the cost drops by ~shrink³), then the log-bias field is evaluated on the
full-resolution grid and divided out: ``corrected = image / exp(log_bias)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from vbiopsy.data.nifti import Volume
from vbiopsy.preprocess.config import BiasFieldConfig
from vbiopsy.preprocess.sitk_bridge import from_sitk, to_sitk


def fit_mask(image: sitk.Image, kind: str) -> sitk.Image:
    """Voxels the field is fitted on: Otsu foreground (raw scans) or nonzero voxels (stripped)."""
    if kind == "nonzero":
        return sitk.Cast(image != 0, sitk.sitkUInt8)
    if kind == "otsu":
        return sitk.OtsuThreshold(image, 0, 1, 200)
    raise ValueError(f"unknown N4 mask {kind!r}; expected 'otsu' or 'nonzero'")


def n4_correct(volume: Volume, config: BiasFieldConfig) -> tuple[Volume, dict[str, Any]]:
    """Bias-corrected copy of ``volume`` (float32, same grid) and what was done.

    Returns the corrected volume and a JSON-able dict with the parameters, the number of
    iterations N4 ran per level, the final convergence measure and the range of the field.
    Negative voxels (none in magnitude MRI) are clipped to 0 first because N4 works in log space.
    """
    image = to_sitk(np.clip(volume.array, 0.0, None).astype(np.float32), volume.affine)
    mask = fit_mask(image, config.mask)
    factor = int(config.shrink_factor)
    small = sitk.Shrink(image, [factor] * 3) if factor > 1 else image
    small_mask = sitk.Shrink(mask, [factor] * 3) if factor > 1 else mask
    if not np.any(sitk.GetArrayViewFromImage(small_mask)):
        small_mask = sitk.Cast(small > 0, sitk.sitkUInt8)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in config.iterations])
    n4.SetConvergenceThreshold(float(config.convergence_threshold))
    n4.SetNumberOfControlPoints([int(config.control_points)] * 3)
    # N4 needs strictly positive input where it fits; +1 keeps zero-valued voxels finite in log space.
    n4.Execute(small + 1.0, small_mask)
    log_bias = n4.GetLogBiasFieldAsImage(image)
    corrected = sitk.Cast(image / sitk.Exp(log_bias), sitk.sitkFloat32)
    field = sitk.GetArrayViewFromImage(log_bias)
    info = {
        "shrink_factor": factor,
        "iterations": list(config.iterations),
        "convergence_threshold": float(config.convergence_threshold),
        "control_points": int(config.control_points),
        "mask": config.mask,
        "iterations_run": [int(i) for i in np.atleast_1d(n4.GetElapsedIterations())],
        "final_convergence": float(n4.GetCurrentConvergenceMeasurement()),
        "bias_range": [float(np.exp(field.min())), float(np.exp(field.max()))],
    }
    out = from_sitk(corrected)
    return Volume(out.array.astype(np.float32, copy=False), volume.affine), info
