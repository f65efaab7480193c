"""Saliency post-processing, placement in the patient's native space, and NIfTI output.

A voxel attribution ``(C, X, Y, Z)`` on the model's input cube becomes one map: the raw
``Σ_c |IG_c|`` (:func:`abs_saliency`) or, as an option, the ASLNet display rule
(:func:`postprocess_saliency`, ``../shared/reference/aslnet-reference-code-notes.md`` §7.3). The map
goes back to the grid the cube was cut from with the recorded :class:`RoiBox` (exact, fixing the
reference's recomputed and therefore shifted box, §8.2) and, given the MRI-Processor record, on to a
native scan grid (:func:`saliency_to_native`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from vbiopsy.atomic import ensure_writable_dir
from vbiopsy.data.nifti import Volume, is_nifti, save_volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.preprocess.aslnet_roi import RoiBox, paste_back
from vbiopsy.preprocess.native import recorded_grid, to_native

GRID_ATOL_MM = 1e-3
"""Largest affine difference (mm) between the ROI's source grid and the record's output grid."""


def _channels_first(array: np.ndarray, name: str) -> np.ndarray:
    """A finite ``(C, X, Y, Z)`` float array; a 3-D ``(X, Y, Z)`` one gets ``C = 1``."""
    array = np.asarray(array, dtype=float)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.size == 0:
        raise InputError(name, f"expected (C, X, Y, Z) or (X, Y, Z), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(name, f"{int((~np.isfinite(array)).sum())} values are NaN or infinite")
    return array


def _check_fraction(name: str, value: object, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= value <= upper) \
            or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number in [0, {upper:g}], got {value!r}")
    return float(value)


def abs_saliency(attribution: np.ndarray) -> np.ndarray:
    """The raw map ``Σ_c |attribution_c|``: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` → ``(X, Y, Z)`` float32."""
    return np.abs(_channels_first(attribution, "attribution")).sum(axis=0).astype(np.float32)


def saliency_foreground(image: np.ndarray, *, percentile: float = 10.0) -> np.ndarray:
    """The reference's foreground ``(X, Y, Z)`` bool: ``max_c > 0`` and ``mean_c >`` its ``percentile``-th
    percentile over the voxels where ``max_c > 0`` (drops background and the dimmest rim)."""
    channels = _channels_first(image, "image")
    _check_fraction("percentile", percentile, 100.0)
    positive = channels.max(axis=0) > 0
    if not positive.any():
        raise InputError("image", "no voxel is above zero, so there is no foreground")
    mean = channels.mean(axis=0)
    return positive & (mean > np.percentile(mean[positive], percentile))


def postprocess_saliency(
    attribution: np.ndarray,
    image: np.ndarray,
    *,
    sigma_vox: float = 1.2,
    foreground_percentile: float = 10.0,
    clip_percentiles: tuple[float, float] = (1.0, 99.5),
    floor_fraction: float = 0.4,
) -> np.ndarray:
    """The ASLNet display map ``(X, Y, Z)`` in ``[0, 1]`` from an attribution and its input image.

    Steps (§7.3): ``Σ_c |IG_c|``; zero outside :func:`saliency_foreground`; Gaussian of
    ``sigma_vox`` voxels (edge-replicate; 0 skips); map the ``clip_percentiles`` (within the
    foreground) to 0 and 1 and clip; zero outside the foreground again (the blur spreads out of it);
    zero values below ``floor_fraction ×`` the in-foreground mean (0 skips). Both arrays are
    ``(C, X, Y, Z)`` or ``(X, Y, Z)`` on the same grid.
    """
    saliency = abs_saliency(attribution).astype(float)
    foreground = saliency_foreground(image, percentile=foreground_percentile)
    if foreground.shape != saliency.shape:
        raise InputError("image", f"spatial shape {foreground.shape} != attribution {saliency.shape}")
    if isinstance(sigma_vox, bool) or not isinstance(sigma_vox, numbers.Real) or not math.isfinite(sigma_vox) \
            or sigma_vox < 0:
        raise ConfigError(f"sigma_vox must be a finite number >= 0, got {sigma_vox!r}")
    low_pct, high_pct = (_check_fraction("clip_percentiles", p, 100.0) for p in clip_percentiles)
    if low_pct >= high_pct:
        raise ConfigError(f"clip_percentiles must be increasing, got {clip_percentiles!r}")
    floor = _check_fraction("floor_fraction", floor_fraction, math.inf)
    if not foreground.any():
        raise InputError("image", "the foreground rule keeps no voxel (a constant image?)")
    saliency[~foreground] = 0.0
    if sigma_vox > 0:
        saliency = ndimage.gaussian_filter(saliency, sigma=sigma_vox, mode="nearest")
    low, high = np.percentile(saliency[foreground], [low_pct, high_pct])
    scaled = np.clip((saliency - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(saliency)
    scaled[~foreground] = 0.0
    if floor > 0:
        scaled[scaled < floor * scaled[foreground].mean()] = 0.0
    return scaled.astype(np.float32)


def mass_inside(saliency: np.ndarray, mask: np.ndarray, *, dilate_vox: float = 2.0) -> float:
    """Fraction of ``Σ|saliency|`` inside ``mask`` grown by ``dilate_vox`` voxels (Euclidean distance).

    The check "≥ 60 % of the IG mass lies in the 2-voxel-dilated tumour" is
    ``mass_inside(abs_saliency(ig), tumour, dilate_vox=2) >= 0.6``. NaN for an all-zero map.
    """
    values = np.abs(np.asarray(saliency, dtype=float))
    if values.ndim != 3 or not np.isfinite(values).all():
        raise InputError("saliency", f"expected a finite (X, Y, Z) map, got shape {values.shape}")
    region = np.asarray(mask).astype(bool)
    if region.shape != values.shape:
        raise InputError("mask", f"shape {region.shape} != saliency shape {values.shape}")
    if not region.any():
        raise InputError("mask", "mask is empty")
    _check_fraction("dilate_vox", dilate_vox, math.inf)
    if dilate_vox > 0:
        region = ndimage.distance_transform_edt(~region) <= dilate_vox
    total = values.sum()
    return float(values[region].sum() / total) if total > 0 else math.nan


def _same_grid(box: RoiBox, record: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` unless the box was cut from the record's output grid."""
    try:
        output = recorded_grid(record["output_grid"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError("record", f"has no readable output_grid ({err!r})") from None
    diff = float(np.max(np.abs(output.affine - box.affine))) if output.affine.shape == (4, 4) else math.inf
    if output.shape != box.source_shape or diff > GRID_ATOL_MM:
        raise InputError("record", f"the ROI box was cut from grid {box.source_shape} but the record's output "
                                   f"grid is {output.shape} (affines differ by up to {diff:.3g} mm)")


def saliency_to_native(saliency_cube: np.ndarray, box: RoiBox, *, record: Mapping[str, Any] | None = None,
                       modality: str | None = None) -> Volume:
    """A map on the ROI cube → the grid the cube was cut from → (optionally) a native scan grid.

    Args:
        saliency_cube: ``(X, Y, Z)`` map of ``box.shape`` (or ``box.out_shape`` for a resampled
            cube); placed exactly with :func:`paste_back`, zero outside the box.
        box: the :class:`RoiBox` recorded when the cube was cut.
        record: the MRI-Processor record of the subject; the box must have been cut from its
            output grid. The map is then resampled (linear) onto ``modality``'s native grid.
        modality: which native scan (e.g. ``"t1c"``); required with ``record``.

    Returns:
        A float32 :class:`Volume` with the affine of the grid it lies on.
    """
    cube = np.asarray(saliency_cube)
    if cube.ndim != 3 or not np.issubdtype(cube.dtype, np.number) or not np.isfinite(cube).all():
        raise InputError("saliency_cube", f"expected a finite (X, Y, Z) map, got shape {cube.shape}, "
                                          f"dtype {cube.dtype}")
    if not isinstance(box, RoiBox):
        raise ConfigError(f"box must be a RoiBox, got {type(box).__name__}")
    source = paste_back(cube.astype(np.float32), box)
    if record is None:
        if modality is not None:
            raise ConfigError(f"modality={modality!r} needs the preprocessing record")
        return Volume(source, np.array(box.affine))
    if not isinstance(modality, str):
        raise ConfigError(f"modality must name a preprocessed scan (e.g. 't1c') with a record, got {modality!r}")
    _same_grid(box, record)
    modalities = record.get("modalities", {})
    if modality not in modalities or modality not in record.get("transforms", {}):
        raise ConfigError(f"modality {modality!r} is not in the preprocessing record; it has {sorted(modalities)}")
    return to_native(source, record, modality, is_label=False)


def save_saliency(volume: Volume, path: Path | str) -> Path:
    """Write ``volume`` as a float32 NIfTI at ``path`` atomically (folders created); returns ``path``."""
    path = Path(path)
    if not is_nifti(path):
        raise InputError(path, "saliency file name must end in .nii or .nii.gz")
    if not isinstance(volume, Volume):
        raise ConfigError(f"volume must be a Volume, got {type(volume).__name__}")
    array = np.asarray(volume.array)
    affine = np.asarray(volume.affine, dtype=float)
    if array.ndim != 3 or not np.isfinite(array).all():
        raise InputError(path, f"saliency must be a finite 3-D map, got shape {array.shape}")
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(path, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    ensure_writable_dir(path.parent)
    return save_volume(array, affine, path, dtype=np.float32)

