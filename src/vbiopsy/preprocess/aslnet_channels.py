"""ASLNet feature channels on the ROI cube: [raw, zg, zl, log], computed only where they are needed.

The four channels of the reference code (``../shared/reference/aslnet-reference-code-notes.md``
§2.2), for the voxels of a :class:`~vbiopsy.preprocess.aslnet_roi.RoiBox`. ``M`` is the brain
mask and ``b`` the in-mask values of the unclipped image:

- **raw** (input units, e.g. mL/100 g/min for ASL CBF): in ``M`` the value raised to at least the
  1st percentile of ``b`` (low tail only); 0 outside.
- **zg** (dimensionless): ``(raw − median(b)) / (1.4826·MAD(b) + 1e-6)``, with ``std(b) + 1e-6``
  as denominator when MAD = 0; 0 outside ``M``.
- **zl** (dimensionless): ``(raw − μ) / σ`` with μ, σ the masked mean and standard deviation of raw
  over a cubic window of ``window_mm`` (15 mm; an odd voxel count per axis from the real spacing,
  edge-replicated at the volume border), σ = sqrt(max(E[x²] − μ², 0) + 1e-6); 0 outside ``M``.
- **log** (log of input units): ``log1p(max(raw, 0))``; 0 outside ``M``.

Only the global statistics (percentile, median, MAD) read the whole mask; the local statistics are
computed on the cube plus the half-window margin, which gives the same values as the whole-volume
computation cropped (the reference computes them over the whole volume and reads the file twice).
Voxels of the cube outside the volume (padding) are 0 in every channel, like background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import ndimage

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.preprocess.aslnet_roi import (
    DEFAULT_SIDE_MM,
    DEFAULT_TOP_PCT,
    RoiBox,
    background_mask,
    check_mask,
    check_positive_mm,
    check_volume,
    compute_roi,
    resample_cube,
    spacing_of,
)

CHANNELS = ("raw", "zg", "zl", "log")
"""Channel order of the feature array (axis 0)."""
LOCAL_WINDOW_MM = 15.0
"""Side of the local z-score window in mm."""
LOW_CLIP_PERCENTILE = 1.0
"""In-mask percentile below which raw values are raised (low-tail clip)."""
MAD_TO_SD = 1.4826
"""MAD → standard deviation factor for normally distributed data."""
EPS = 1e-6


class VolumeLike(Protocol):
    """What :func:`aslnet_inputs` reads: a (X, Y, Z) ``array`` and its 4×4 voxel → mm ``affine``."""

    array: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class GlobalStats:
    """Whole-mask intensity statistics in input units: low clip (P1), median, robust scale."""

    low_clip: float
    median: float
    scale: float


def global_stats(array: np.ndarray, mask: np.ndarray) -> GlobalStats:
    """Statistics of the in-mask values ``b`` of ``array`` used by the raw and zg channels."""
    values = array[mask].astype(np.float64)
    low, median = np.percentile(values, [LOW_CLIP_PERCENTILE, 50.0])
    mad = float(np.median(np.abs(values - median)))
    scale = MAD_TO_SD * mad + EPS if mad > 0 else float(values.std()) + EPS
    return GlobalStats(float(low), float(median), scale)


def local_window(spacing: Sequence[float], window_mm: float = LOCAL_WINDOW_MM) -> tuple[int, int, int]:
    """Odd voxel count per axis closest to ``window_mm`` (15 at 1 mm, 7 at 2 mm), at least 3.

    A 1-voxel window would make the local z-score identically 0, so coarse grids get 3 voxels.
    """
    check_positive_mm(window_mm, "window_mm")
    return tuple(2 * max(1, round((window_mm / s - 1) / 2)) + 1 for s in spacing)  # type: ignore[return-value]


def feature_channels(
    array: np.ndarray,
    mask: np.ndarray,
    *,
    spacing: Sequence[float],
    window_mm: float = LOCAL_WINDOW_MM,
    stats: GlobalStats | None = None,
    core: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """The four channels of ``array`` (X, Y, Z) → float32 (4, X', Y', Z'), see the module doc.

    Args:
        array, mask: image and brain mask (bool) of the same shape.
        spacing: voxel size in mm per axis (sets the local window in voxels).
        stats: whole-volume statistics; computed from ``array[mask]`` when ``None``.
        core: return only these slices of ``array`` (the local windows still see all of it).
    """
    stats = global_stats(array, mask) if stats is None else stats
    window = local_window(spacing, window_mm)
    volume = float(np.prod(window))
    raw = np.where(mask, np.maximum(array, stats.low_clip), 0.0)
    weight = mask.astype(np.float64)
    sums = [ndimage.uniform_filter(x, window, mode="nearest") * volume for x in (raw, raw * raw, weight)]
    core = core if core is not None else (slice(None),) * 3
    raw, mask = raw[core], mask[core]
    sum_x, sum_x2, sum_m = (s[core] for s in sums)
    mean = sum_x / (sum_m + EPS)
    sd = np.sqrt(np.maximum(sum_x2 / (sum_m + EPS) - mean * mean, 0.0) + EPS)
    out = np.zeros((len(CHANNELS), *raw.shape), dtype=np.float32)
    out[0] = raw
    out[1] = np.where(mask, (raw - stats.median) / stats.scale, 0.0)
    out[2] = np.where(mask, (raw - mean) / sd, 0.0)
    out[3] = np.where(mask, np.log1p(np.maximum(raw, 0.0)), 0.0)
    return out


def roi_channels(
    array: np.ndarray,
    mask: np.ndarray,
    box: RoiBox,
    *,
    window_mm: float = LOCAL_WINDOW_MM,
    stats: GlobalStats | None = None,
) -> np.ndarray:
    """The four channels on ``box`` → float32 (4, *box.shape), from the cube plus the window margin.

    Equal to ``crop(feature_channels(array, mask, ...), box)`` with zero padding, at the cost of the
    cube instead of the volume.
    """
    half = [w // 2 for w in local_window(box.spacing, window_mm)]
    inner = box.source_slices
    region = tuple(slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(inner, half, box.source_shape))
    core = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(inner, region))
    stats = global_stats(array, mask) if stats is None else stats
    inside = feature_channels(array[region], mask[region], spacing=box.spacing, window_mm=window_mm,
                              stats=stats, core=core)
    out = np.zeros((len(CHANNELS), *box.shape), dtype=np.float32)
    out[(slice(None), *box.crop_slices)] = inside
    return out


def statistics_mask(array: np.ndarray, brain_mask: np.ndarray | None, where: str | Path = "volume") -> np.ndarray:
    """The mask of the channel statistics: ``brain_mask`` (checked) or the reference background mask.

    Raises:
        InputError: a bad brain mask, or an image that is all background.
    """
    if brain_mask is not None:
        return check_mask(brain_mask, array.shape)
    mask = background_mask(array)
    if not mask.any():
        raise InputError(where, "image is all background (no voxel above its 0.5th-percentile level, "
                                f"max value {float(array.max()):g})")
    return mask


def aslnet_inputs(
    volume: VolumeLike,
    *,
    side_mm: float = DEFAULT_SIDE_MM,
    top_pct: float = DEFAULT_TOP_PCT,
    brain_mask: np.ndarray | None = None,
    centre_mm: Sequence[float] | None = None,
    out_shape: Sequence[int] | None = None,
    window_mm: float = LOCAL_WINDOW_MM,
    where: str | Path = "volume",
) -> tuple[np.ndarray, RoiBox]:
    """ASLNet model input of one scan: (4, X, Y, Z) float32 channels [raw, zg, zl, log] and the box.

    Args:
        volume: e.g. :func:`vbiopsy.data.nifti.load_volume` of an ASL CBF map.
        side_mm: ROI cube side in mm (70, paper).
        top_pct: percentage of searched voxels taken as brightest (0.01 = 0.01 %, paper).
        brain_mask: if given, the brightest-voxel search is restricted to it and it is the mask of
            the channel statistics; otherwise the whole volume is searched (paper) and the mask is
            the reference background mask (:func:`~vbiopsy.preprocess.aslnet_roi.background_mask`).
        centre_mm: centre the cube on this world point (mm), e.g. a localiser's tumour centre.
        out_shape: resample the cube linearly to this grid, spanning the same physical box. The
            cube has ``round(side_mm / spacing)`` voxels per axis, so at 1 mm (the paper's data)
            ``out_shape=(70, 70, 70)`` is the cube itself, untouched; at other spacings the voxels
            become ``extent_mm / out_shape`` mm (isotropic for anisotropic input if the extents
            match). ``box.out_shape`` records it and :func:`paste_back` maps such arrays back.
        window_mm: local z-score window side in mm (15).
        where: name for error messages (the file the image came from).

    Raises:
        InputError: not 3-D, NaN/Inf, empty or all-background image; bad brain mask.
        ConfigError: non-positive side or window, ``top_pct`` outside (0, 100], centre outside the
            volume, bad ``out_shape``.
    """
    array = check_volume(volume.array, where)
    affine = np.asarray(volume.affine, dtype=float)
    if affine.shape != (4, 4):
        raise InputError(where, f"affine must be 4x4, got shape {affine.shape}")
    mask = statistics_mask(array, brain_mask, where)
    local_window(spacing_of(affine), window_mm)  # validates window_mm before any work
    box = compute_roi(array, affine, side_mm=side_mm, top_pct=top_pct, search_mask=brain_mask,
                      centre_mm=centre_mm, where=where)
    channels = roi_channels(array, mask, box, window_mm=window_mm)
    if out_shape is not None:
        target = _check_out_shape(out_shape)
        if target != box.shape:
            channels = resample_cube(channels, target).astype(np.float32, copy=False)
        box = box.with_out_shape(target)
    return channels, box


def _check_out_shape(out_shape: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(out_shape)
    if len(values) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                                   for n in values):
        raise ConfigError(f"out_shape must be 3 positive integers, got {out_shape!r}")
    return tuple(int(n) for n in values)  # type: ignore[return-value]
