"""Tumour-centred crops for the diagnoser's crop branch: a fixed-resolution window around the prior's centre.

The whole-brain working grid (≈ 4 mm in the demo config) blurs a 10–20 mm tumour into a few voxels,
so its enhancement pattern (ring, homogeneous, none) is lost. The crop branch sees the tumour at the
scan's resolution instead: a cube of ``shape`` voxels of ``spacing_mm`` (default 32³ × 2 mm = 64 mm)
centred on the tumour prior's centre of mass, one channel per modality, each z-scored over the brain
of the whole scan (0 outside it).

A crop is stored ``jitter`` voxels larger on every side (:func:`lesion_crops`); training cuts the
window at a random shift of at most ``jitter`` voxels per axis (the prior's centre is itself only an
estimate), evaluation the central window (:func:`crop_window`). An empty prior is centred on the brain
(the whole-brain fallback; the warning is the sample's). Pure functions on NumPy arrays (X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.diagnosis_config import LesionCropSettings
from vbiopsy.train.diagnosis_grid import crop_padded, to_working_grid, zscore_in_brain


def centre_of_mass(weights: np.ndarray) -> np.ndarray | None:
    """Centre of mass (3,) in voxel coordinates of non-negative ``weights`` (X, Y, Z) (SciPy's); None when all
    zero."""
    if weights.ndim != 3:
        raise InputError("prior", f"expected a 3-D array (X, Y, Z), got shape {weights.shape}")
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if not w.sum() > 0:
        return None
    return np.asarray(ndimage.center_of_mass(w), dtype=float)


def crop_box(centre: Sequence[float], scan_spacing: Sequence[float], shape: Sequence[int],
             spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) scan-voxel indices (may leave the scan) of a box of ``shape`` × ``spacing_mm`` mm
    centred on ``centre`` (voxel coordinates)."""
    spacing = np.asarray(scan_spacing, dtype=float)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise InputError("scan", f"voxel spacing must be 3 positive values, got {list(scan_spacing)}")
    size = np.maximum(np.round(np.asarray(shape, float) * spacing_mm / spacing).astype(int), 1)
    start = np.floor(np.asarray(centre, float) - size / 2.0 + 0.5).astype(int)
    return start, start + size


def cut_crop(volume: np.ndarray, centre: Sequence[float], scan_spacing: Sequence[float], shape: Sequence[int],
             spacing_mm: float) -> np.ndarray:
    """``volume`` (X, Y, Z) around ``centre`` resampled onto ``shape`` voxels of ``spacing_mm`` (float32;
    zeros where the box leaves the scan; anti-alias smoothing when the crop is coarser than the scan)."""
    start, stop = crop_box(centre, scan_spacing, shape, spacing_mm)
    return to_working_grid(crop_padded(volume, start, stop), shape)


def lesion_crops(images: Mapping[str, np.ndarray], brain: np.ndarray, scan_spacing: Sequence[float],
                 priors: Mapping[str, np.ndarray], settings: LesionCropSettings) -> tuple[dict[str, np.ndarray],
                                                                                         dict[str, list[float]]]:
    """Per prior name: the stored crop (M, *(shape + 2·jitter)) float32 of the ``settings.modalities``
    (``images`` on the scan grid, z-scored over ``brain``) centred on that prior (scan grid), and the centres
    used (scan-voxel coordinates; the brain's for an empty prior)."""
    missing = [m for m in settings.modalities if m not in images]
    if missing:
        raise InputError("lesion crop", f"no {', '.join(missing)} image (data.lesion_crop.modalities)")
    for name, array in [*images.items(), *priors.items()]:
        if array.shape != brain.shape:
            raise InputError(f"lesion crop {name}", f"shape {array.shape} differs from the brain mask's {brain.shape}")
    stored = tuple(n + 2 * settings.jitter_voxels for n in settings.shape)
    normalised = [zscore_in_brain(images[m], brain) for m in settings.modalities]
    brain_centre = centre_of_mass(brain.astype(np.float32))
    if brain_centre is None:
        raise InputError("brain mask", "is empty: no brain found in the scan")
    crops, centres = {}, {}
    for name, prior in priors.items():
        centre = centre_of_mass(prior)
        centre = brain_centre if centre is None else centre
        crops[name] = np.stack([cut_crop(v, centre, scan_spacing, stored, settings.spacing_mm) for v in normalised])
        centres[name] = [round(float(c), 3) for c in centre]
    return crops, centres


def crop_window(crop: np.ndarray, jitter: int, shift: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """The window of a stored crop (M, X + 2·jitter, ...) at offset ``jitter + shift`` (|shift| ≤ jitter per axis):
    (M, X, Y, Z), a contiguous copy."""
    if isinstance(jitter, bool) or not isinstance(jitter, (int, np.integer)) or jitter < 0:
        raise ConfigError(f"jitter must be an integer >= 0, got {jitter!r}")
    if crop.ndim != 4 or any(n <= 2 * jitter for n in crop.shape[1:]):
        raise InputError("crop", f"expected (M, X, Y, Z) larger than 2 × jitter = {2 * jitter}, got {crop.shape}")
    offsets = [int(jitter) + int(s) for s in shift]
    if len(offsets) != 3 or any(not 0 <= o <= 2 * jitter for o in offsets):
        raise ConfigError(f"shift must be 3 integers in [-{jitter}, {jitter}], got {list(shift)}")
    size = [n - 2 * int(jitter) for n in crop.shape[1:]]
    window = tuple(slice(o, o + n) for o, n in zip(offsets, size))
    return np.ascontiguousarray(crop[(slice(None), *window)])
