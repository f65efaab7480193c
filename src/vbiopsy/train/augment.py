"""On-the-fly augmentation of a raw ROI cube (signal + mask), before the derived channels.

Each transform draws its parameters from a NumPy generator, records them, and calls a
deterministic operation, so an augmented sample is reproducible from its seed:

- **flip**: each spatial axis with probability ``flip_prob``;
- **rotate**: angles U(−θ, θ) about each axis (MONAI ``Rotate``; linear for the signal, nearest for
  the mask, border padding);
- **elastic**: a smooth random displacement field whose RMS is ``elastic_magnitude_mm`` — white
  noise smoothed by a Gaussian of ``elastic_sigma_mm`` and *renormalised*. Smoothing alone shrinks
  the noise by orders of magnitude (the reference code's field moved voxels by ~0.015 voxel: a
  no-op; MONAI's ``Rand3DElastic`` scales smoothed noise the same way), hence our own field;
- **Rician noise** on the signal inside the mask: ``sqrt((x + n1)² + n2²)``, ``n1, n2 ~ N(0, s²)``,
  ``s = rician_std_fraction ×`` the scan's robust scale — on the CBF values, so the signed z-score
  channels computed afterwards stay signed and mutually consistent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.transforms import Rotate
from scipy import ndimage

from vbiopsy.train.config import AugmentSettings


def flip(raw: np.ndarray, mask: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Reverse ``raw`` and ``mask`` along ``axes``."""
    if not axes:
        return raw, mask
    return np.ascontiguousarray(np.flip(raw, axes)), np.ascontiguousarray(np.flip(mask, axes))


def rotate(raw: np.ndarray, mask: np.ndarray, angles_rad: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the cube centre by ``angles_rad`` (about axes 0, 1, 2), same shape."""
    out = []
    for array, mode in ((raw, "bilinear"), (mask.astype(np.float32), "nearest")):
        rotated = Rotate(angle=angles_rad, keep_size=True, mode=mode, padding_mode="border")(array[None])
        out.append(np.asarray(rotated)[0])
    return out[0].astype(np.float32, copy=False), out[1] > 0.5


def elastic_field(shape: tuple[int, ...], sigma_vox: np.ndarray, magnitude_vox: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Displacement (3, *shape) in voxels: smoothed white noise rescaled to RMS ``magnitude_vox`` per axis."""
    field = np.empty((3, *shape), dtype=np.float32)
    for axis in range(3):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
        rms = float(np.sqrt(np.mean(noise**2))) or 1.0
        field[axis] = noise / rms * magnitude_vox[axis]
    return field


def deform(raw: np.ndarray, mask: np.ndarray, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``raw`` (linear) and ``mask`` (nearest) at identity + ``field`` (edge values outside)."""
    grid = np.indices(raw.shape, dtype=np.float32) + field
    warped = ndimage.map_coordinates(raw, grid, order=1, mode="nearest").astype(np.float32)
    warped_mask = ndimage.map_coordinates(mask.astype(np.uint8), grid, order=0, mode="nearest") > 0
    return warped, warped_mask


def rician(raw: np.ndarray, mask: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise of scale ``std`` (input units) on the voxels in ``mask``; background untouched."""
    n1 = rng.normal(0.0, std, raw.shape).astype(np.float32)
    n2 = rng.normal(0.0, std, raw.shape).astype(np.float32)
    return np.where(mask, np.sqrt((raw + n1) ** 2 + n2**2), raw).astype(np.float32)


def augment_cube(raw: np.ndarray, mask: np.ndarray, *, spacing: tuple[float, float, float], noise_scale: float,
                 settings: AugmentSettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One random augmentation of a raw cube; returns the new signal, mask and what was drawn.

    Args:
        raw, mask: (X, Y, Z) signal and bool mask (see :class:`vbiopsy.data.roi_cubes.RoiCube`).
        spacing: voxel size in mm (elastic settings are in mm).
        noise_scale: the scan's robust intensity scale (input units); Rician std is a fraction of it.
    """
    drawn: dict[str, Any] = {}
    axes = tuple(int(a) for a in range(3) if rng.random() < settings.flip_prob)
    raw, mask = flip(raw, mask, axes)
    drawn["flip_axes"] = list(axes)
    if settings.rotate_deg > 0 and rng.random() < settings.rotate_prob:
        angles = tuple(float(a) for a in np.deg2rad(rng.uniform(-settings.rotate_deg, settings.rotate_deg, 3)))
        raw, mask = rotate(raw, mask, angles)  # type: ignore[arg-type]
        drawn["rotate_deg"] = [round(float(np.rad2deg(a)), 3) for a in angles]
    if settings.elastic_magnitude_mm > 0 and rng.random() < settings.elastic_prob:
        spacing_arr = np.asarray(spacing, dtype=float)
        field = elastic_field(raw.shape, settings.elastic_sigma_mm / spacing_arr,
                              settings.elastic_magnitude_mm / spacing_arr, rng)
        raw, mask = deform(raw, mask, field)
        drawn["elastic_rms_mm"] = settings.elastic_magnitude_mm
    if settings.rician_std_fraction > 0 and rng.random() < settings.rician_prob:
        std = settings.rician_std_fraction * noise_scale
        raw = rician(raw, mask, std, rng)
        drawn["rician_std"] = round(std, 6)
    return raw, mask, drawn
