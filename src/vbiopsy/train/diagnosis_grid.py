"""The diagnoser's grids: the working-grid box around the brain, cutting, resampling, z-scoring and pasting back.

The whole-brain input of the Adaptive-Diagnoser is a square axial field of view around the brain's
bounding box (:func:`working_box`) cut from the scan (:func:`crop_padded`, background where it
leaves the scan), anti-alias smoothed and resampled linearly (:func:`to_working_grid`); maps on that
grid go back to the scan with :func:`paste_to_scan`. Pure functions on NumPy arrays (X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from vbiopsy.errors import InputError
from vbiopsy.preprocess.aslnet_roi import resample_cube


def working_box(brain: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) voxel indices (may leave the scan) of a square axial field of view around ``brain``."""
    if not brain.any():
        raise InputError("brain mask", "is empty: no brain found in the scan")
    spacing_arr = np.asarray(spacing, dtype=float)
    hits = np.argwhere(brain)
    low, high = hits.min(0), hits.max(0) + 1
    extent_mm = (high - low) * spacing_arr + 2.0 * margin_mm
    extent_mm[:2] = extent_mm[:2].max()
    size = np.maximum(np.round(extent_mm / spacing_arr).astype(int), 1)
    start = np.floor((low + high) / 2.0 - size / 2.0 + 0.5).astype(int)
    return start, start + size


def crop_padded(array: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``array[start:stop]`` with zeros where the box leaves ``array``."""
    out = np.zeros(tuple(int(n) for n in stop - start), dtype=array.dtype)
    src = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, array.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, start))
    out[dst] = array[src]
    return out


def to_working_grid(box: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a cut box onto ``shape`` (linear, same extent), Gaussian pre-smoothing σ = (f − 1)/2 per
    axis where it shrinks by f > 1 (scikit-image's anti-aliasing rule); float32."""
    factor = np.asarray(box.shape, float) / np.asarray(shape, float)
    sigma = np.clip((factor - 1.0) / 2.0, 0.0, None)
    smooth = ndimage.gaussian_filter(box.astype(np.float32), sigma, mode="nearest") if sigma.any() else box
    return resample_cube(smooth.astype(np.float32, copy=False), shape).astype(np.float32, copy=False)


def zscore_in_brain(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(image − mean) / sd over the brain, 0 outside; float32."""
    values = image[brain]
    sd = float(values.std()) if values.size > 1 else 0.0
    return np.where(brain, (image - float(values.mean())) / (sd if sd > 0 else 1.0), 0.0).astype(np.float32)


def paste_to_scan(working: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """A working-grid map (X, Y, Z) put back on the scan grid of ``record`` (linear; 0 outside the box)."""
    start, stop = np.asarray(record["box_start"]), np.asarray(record["box_stop"])
    box = resample_cube(working.astype(np.float32), tuple(int(n) for n in stop - start))
    out = np.zeros(tuple(record["scan_shape"]), dtype=np.float32)
    dst = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, out.shape))
    src = tuple(slice(d.start - a, d.stop - a) for d, a in zip(dst, start))
    out[dst] = box[src]
    return out
