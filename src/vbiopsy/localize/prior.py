"""Coarse prior (paper Eq. 4): stacked slice boxes → Gaussian smoothing → grey dilation → [0, 1].

Stacking boxes slice by slice gives stair-step edges and misses tumour the boxes cut off;
smoothing (``sigma_mm``) turns the stack into a continuous map and the grey dilation (a maximum
over a ball of ``dilation_mm``) widens it, so the prior leans towards covering the tumour. Work is
done on the boxes' bounding box plus the filters' reach, so the cost does not grow with the
field of view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from vbiopsy.localize.boxes import Proposals, stack_boxes
from vbiopsy.localize.config import PriorConfig
from vbiopsy.localize.geometry import ball, bounding_slices

Spacing = tuple[float, float, float]


def smooth_and_dilate(stacked: np.ndarray, spacing: Spacing, sigma_mm: float, dilation_mm: float) -> np.ndarray:
    """Gaussian smoothing (``sigma_mm``) then grey dilation (ball of ``dilation_mm``), clipped to [0, 1]."""
    out = np.zeros(stacked.shape, dtype=np.float32)
    if not stacked.any():
        return out
    reach = [int(np.ceil((4.0 * sigma_mm + dilation_mm) / s)) + 1 for s in spacing]
    window = bounding_slices(stacked > 0, tuple(reach))  # type: ignore[arg-type]
    part = stacked[window].astype(np.float32)
    if sigma_mm > 0:
        part = ndimage.gaussian_filter(part, [sigma_mm / s for s in spacing], mode="constant", truncate=4.0)
    if dilation_mm > 0:
        footprint = ball(dilation_mm, spacing)
        if footprint.size > 1:
            part = ndimage.grey_dilation(part, footprint=footprint, mode="constant", cval=0.0)
    out[window] = np.clip(part, 0.0, 1.0)
    return out


def coarse_prior(proposals: Proposals, brain: np.ndarray, spacing: Spacing,
                 config: PriorConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """The coarse prior (X, Y, Z float32 in [0, 1], 0 outside ``brain``) and its record."""
    stacked = stack_boxes(proposals)
    prior = smooth_and_dilate(stacked, spacing, config.sigma_mm, config.dilation_mm)
    prior[~brain] = 0.0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    record = {"sigma_mm": config.sigma_mm, "dilation_mm": config.dilation_mm,
              "mask_threshold": config.mask_threshold,
              "box_ml": round(float(np.count_nonzero((stacked > 0) & brain)) * voxel_ml, 3),
              "mask_ml": round(float(np.count_nonzero(prior >= config.mask_threshold)) * voxel_ml, 3)}
    return prior, record
