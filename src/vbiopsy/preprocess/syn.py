"""Deformable SyN registration to the template through ANTsPy (optional extra).

ANTsPy pins old numpy/scipy, so it is never a dependency: it is imported only when the ``syn``
backend runs, and a clear :class:`ConfigError` says how to install it otherwise. The affine part is
SimpleITK's (:mod:`vbiopsy.preprocess.template_registration`); ANTs then fits ``SyNOnly`` between
the template and the affinely resampled reference. Its forward and inverse displacement fields
are read back with SimpleITK, resampled to ``syn_field_spacing_mm`` so the record stays a few MB,
and recorded as ``DisplacementFieldTransform`` parameter lists (each with its inverse).
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import SimpleITK as sitk

from vbiopsy.errors import ConfigError
from vbiopsy.preprocess.registration import isotropic_grid
from vbiopsy.preprocess.sitk_bridge import grid_image, grid_of, transform_to_record

INSTALL_HINT = "pip install antspyx"


def import_ants() -> ModuleType:
    """The ``ants`` module, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module("ants")
    except ImportError:
        raise ConfigError(f"registration backend 'syn' needs ANTsPy, which is not installed: {INSTALL_HINT} "
                          "(it pins older numpy/scipy; use a separate environment if that conflicts), "
                          "or set registration.backend to 'affine'") from None


def _field_transform(path: str, spacing_mm: float) -> sitk.Transform:
    """Displacement-field transform read from an ANTs warp file, on a ``spacing_mm`` lattice."""
    field = sitk.ReadImage(str(path), sitk.sitkVectorFloat64)
    lattice = grid_image(isotropic_grid(grid_of(field), spacing_mm))
    coarse = sitk.Resample(field, lattice, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear,
                           0.0, sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(coarse)


def _read_transform(path: str, spacing_mm: float) -> sitk.Transform:
    name = str(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return _field_transform(path, spacing_mm)
    return sitk.ReadTransform(str(path))


def syn_records(template: sitk.Image, warped_reference: sitk.Image,
                spacing_mm: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit SyN between ``template`` (fixed) and ``warped_reference`` (moving, on the template grid).

    Returns the transform records, template → warped-reference space, in the order they apply to a
    point (each non-linear one carrying its ``inverse``), and a report.
    """
    ants = import_ants()
    with tempfile.TemporaryDirectory(prefix="vbiopsy-syn-") as tmp:
        fixed_path, moving_path = Path(tmp) / "fixed.nii.gz", Path(tmp) / "moving.nii.gz"
        sitk.WriteImage(sitk.Cast(template, sitk.sitkFloat32), str(fixed_path))
        sitk.WriteImage(sitk.Cast(warped_reference, sitk.sitkFloat32), str(moving_path))
        result = ants.registration(fixed=ants.image_read(str(fixed_path)), moving=ants.image_read(str(moving_path)),
                                   type_of_transform="SyNOnly", outprefix=str(Path(tmp) / "syn_"))
        forward = list(result["fwdtransforms"])
        inverse = list(result["invtransforms"])
        # ANTs lists transforms in antsApplyTransforms order: the last one acts on a point first.
        fields_fwd = [p for p in forward if str(p).lower().endswith((".nii", ".nii.gz"))]
        fields_inv = [p for p in inverse if str(p).lower().endswith((".nii", ".nii.gz"))]
        if len(fields_fwd) != 1 or len(fields_inv) != 1:
            raise RuntimeError(f"ANTs SyN returned unexpected transforms {forward} / {inverse}")
        records: list[dict[str, Any]] = []
        for path in reversed(forward):
            record = transform_to_record(_read_transform(path, spacing_mm))
            if path in fields_fwd:
                record["inverse"] = transform_to_record(_read_transform(fields_inv[0], spacing_mm))
            records.append(record)
    sizes = [int(np.prod(r["fixed_parameters"][:3])) for r in records if r["type"] == "DisplacementFieldTransform"]
    report = {"backend": "antspy", "type_of_transform": "SyNOnly", "field_spacing_mm": spacing_mm,
              "field_voxels": sizes}
    return records, report
