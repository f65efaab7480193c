"""Bridge between the toolkit's RAS volumes and SimpleITK images, grids and transforms.

The toolkit holds arrays in (X, Y, Z) voxel order with a nibabel-style RAS affine; SimpleITK
holds (Z, Y, X) buffers with origin, spacing and direction in LPS millimetres. Transforms are
always SimpleITK's: they map points of the *fixed* (output) space to the *moving* (input) space,
in LPS mm. Records of transforms are JSON-able dicts (type, parameters, fixed parameters) that
:func:`transform_from_record` turns back into the same transform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from vbiopsy.data.nifti import Grid, Volume

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

INTERPOLATORS: dict[str, int] = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}
"""Interpolator names accepted by the resampling helpers."""


def _geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Origin, spacing and direction (LPS) of a RAS voxel→mm affine."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length voxel axis: {affine.tolist()}")
    direction = RAS_TO_LPS @ (linear / spacing)
    origin = RAS_TO_LPS @ np.asarray(affine, dtype=float)[:3, 3]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def affine_of(image: sitk.Image) -> np.ndarray:
    """RAS voxel→mm affine (4×4) of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = RAS_TO_LPS @ np.asarray(image.GetOrigin(), dtype=float)
    return affine


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """SimpleITK image of an (X, Y, Z) array on the RAS grid ``affine`` (voxels are copied)."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3-D array, got shape {array.shape}")
    data = array.astype(np.float32, copy=False) if array.dtype == np.float64 else array
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    origin, spacing, direction = _geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """SimpleITK image of a :class:`Volume`."""
    return to_sitk(volume.array, volume.affine)


def from_sitk(image: sitk.Image) -> Volume:
    """:class:`Volume` (X, Y, Z array, RAS affine) of a SimpleITK image."""
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    return Volume(array, affine_of(image))


def grid_image(grid: Grid) -> sitk.Image:
    """An empty (uint8) SimpleITK image on ``grid``, used as the reference of a resampling."""
    image = sitk.Image([int(s) for s in grid.shape], sitk.sitkUInt8)
    origin, spacing, direction = _geometry(grid.affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def grid_of(image: sitk.Image) -> Grid:
    """The RAS :class:`Grid` of a SimpleITK image."""
    return Grid(tuple(int(s) for s in image.GetSize()), affine_of(image))  # type: ignore[arg-type]


def resample(image: sitk.Image, grid: Grid, transform: sitk.Transform | None = None, *,
             interpolation: str = "linear", default: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``grid``; ``transform`` maps ``grid`` points to ``image`` points."""
    if interpolation not in INTERPOLATORS:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(INTERPOLATORS)}")
    tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    return sitk.Resample(image, grid_image(grid), tx, INTERPOLATORS[interpolation], float(default),
                         image.GetPixelID())


def transform_to_record(transform: sitk.Transform) -> dict[str, Any]:
    """JSON-able record of one (non-composite) transform: its class, parameters, fixed parameters."""
    tx = transform.Downcast()
    if isinstance(tx, sitk.CompositeTransform):
        raise ValueError("record the transforms of a composite one by one (see transforms_to_records)")
    name = tx.GetName()
    if name == "Transform" and tx.GetTransformEnum() == sitk.sitkIdentity:
        name = "IdentityTransform"
    return {"type": name, "parameters": [float(p) for p in tx.GetParameters()],
            "fixed_parameters": [float(p) for p in tx.GetFixedParameters()]}


_FACTORIES: dict[str, Any] = {
    "IdentityTransform": lambda: sitk.Transform(3, sitk.sitkIdentity),
    "TranslationTransform": lambda: sitk.TranslationTransform(3),
    "Euler3DTransform": sitk.Euler3DTransform,
    "VersorRigid3DTransform": sitk.VersorRigid3DTransform,
    "Similarity3DTransform": sitk.Similarity3DTransform,
    "ScaleVersor3DTransform": sitk.ScaleVersor3DTransform,
    "AffineTransform": lambda: sitk.AffineTransform(3),
    "DisplacementFieldTransform": lambda: sitk.DisplacementFieldTransform(3),
    "BSplineTransform": lambda: sitk.BSplineTransform(3),
}


def transform_from_record(record: Mapping[str, Any]) -> sitk.Transform:
    """Rebuild the transform that :func:`transform_to_record` recorded."""
    kind = str(record.get("type", ""))
    if kind not in _FACTORIES:
        raise ValueError(f"unknown transform type {kind!r}; expected one of {sorted(_FACTORIES)}")
    tx = _FACTORIES[kind]()
    tx.SetFixedParameters([float(p) for p in record["fixed_parameters"]])
    tx.SetParameters([float(p) for p in record["parameters"]])
    return tx


def compose(records: Sequence[Mapping[str, Any]]) -> sitk.Transform:
    """One transform applying ``records[0]`` first, then ``records[1]``, … to a point.

    SimpleITK's composite transform applies the *last added* transform first, so they are added
    in reverse order.
    """
    composite = sitk.CompositeTransform(3)
    for record in reversed(list(records)):
        composite.AddTransform(transform_from_record(record))
    return composite


def is_linear(record: Mapping[str, Any]) -> bool:
    """True if the recorded transform is affine (exactly invertible in closed form)."""
    return str(record.get("type")) not in ("DisplacementFieldTransform", "BSplineTransform")


def inverse_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Record of the inverse transform: exact for linear ones, the stored ``inverse`` otherwise."""
    if is_linear(record):
        return transform_to_record(transform_from_record(record).GetInverse())
    inverse = record.get("inverse")
    if not isinstance(inverse, Mapping):
        raise ValueError(f"a {record.get('type')} record needs its 'inverse' to be inverted")
    out = dict(inverse)
    out["inverse"] = {k: v for k, v in record.items() if k != "inverse"}
    return out
