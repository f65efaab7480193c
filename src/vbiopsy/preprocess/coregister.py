"""Co-registration of one modality to the patient's reference modality (rigid, Mattes MI).

Modalities of one session share the scanner's world coordinates, so the optimisation starts at
identity (centred on the reference) and only corrects motion between series. A modality already
on the reference's grid is either trusted (``same_grid='skip'``) or verified: registered anyway,
and the identity kept unless the head moved by more than ``tolerance_mm`` (or 0.4 voxel) — on TCGA-FG-6692 the
T1 and T1c headers are identical while the head turned by 8° between the two series. Either way
the identity is recorded with its reason.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from vbiopsy.data.nifti import Grid
from vbiopsy.preprocess.config import CoregistrationConfig
from vbiopsy.preprocess.registration import register
from vbiopsy.preprocess.sitk_bridge import transform_to_record


VOXEL_NOISE = 0.4
"""Rigid registration of two contrasts of the same head lands within ~0.3 voxel of the truth, so a
same-grid series is only called moved beyond this fraction of the coarsest voxel side."""


def identity_record() -> dict[str, Any]:
    """Record of the identity transform."""
    return transform_to_record(sitk.Transform(3, sitk.sitkIdentity))


def coregister(reference: sitk.Image, moving: sitk.Image, reference_grid: Grid, moving_grid: Grid,
               config: CoregistrationConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rigid transform (reference points → moving points) as a record, and a report.

    Skipped (identity) when ``config.enabled`` is false or the grids match.
    """
    start = time.perf_counter()
    if not config.enabled:
        return identity_record(), {"skipped": "co-registration disabled in the config"}
    same_grid = moving_grid.mismatch(reference_grid) is None
    if same_grid and config.same_grid == "skip":
        return identity_record(), {"skipped": "already on the reference grid"}
    initial = sitk.Euler3DTransform()
    centre = reference.TransformContinuousIndexToPhysicalPoint(
        [float(c) for c in (np.array(reference.GetSize()) - 1) / 2.0])
    initial.SetCenter(centre)
    transform, report = register(reference, moving, "rigid", config, initial=initial)
    report["motion_mm"] = round(mean_displacement(transform, reference), 3)
    report["seconds"] = round(time.perf_counter() - start, 3)
    tolerance = max(config.tolerance_mm, VOXEL_NOISE * max(max(reference.GetSpacing()), max(moving.GetSpacing())))
    if same_grid and report["motion_mm"] < tolerance:
        report["skipped"] = (f"already on the reference grid and aligned (registration moved it "
                             f"{report['motion_mm']:.2f} mm < {tolerance:.2g} mm)")
        return identity_record(), report
    return transform_to_record(transform), report


def mean_displacement(transform: sitk.Transform, image: sitk.Image, samples: int = 6) -> float:
    """Mean distance (mm) that ``transform`` moves points of a ``samples``³ lattice over ``image``."""
    axes = [np.linspace(0, s - 1, samples) for s in image.GetSize()]
    total = 0.0
    count = 0
    for index in np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3):
        point = image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index])
        total += float(np.linalg.norm(np.subtract(transform.TransformPoint(point), point)))
        count += 1
    return total / count
