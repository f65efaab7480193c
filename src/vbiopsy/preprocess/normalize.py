"""Intensity normalisation: z-score inside the brain after percentile clipping, background 0.

Clipping first (default 0.5–99.5th percentile of the brain's voxels) keeps a few bright vessels
or dark artefacts from setting the scale; mean and standard deviation are then those of the
clipped brain voxels, so the brain has mean 0 and standard deviation 1 exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def zscore(image: np.ndarray, mask: np.ndarray, *, lower_percentile: float = 0.5,
           upper_percentile: float = 99.5) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalised float32 copy of ``image`` (0 outside ``mask``) and the statistics used.

    Raises:
        ValueError: if ``mask`` is empty or the percentiles are not ``0 ≤ lower < upper ≤ 100``.
    """
    if not 0.0 <= lower_percentile < upper_percentile <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower_percentile}, "
                         f"{upper_percentile}")
    inside = mask.astype(bool)
    if not inside.any():
        raise ValueError("cannot normalise inside an empty mask")
    values = image[inside].astype(np.float64)
    low, high = np.percentile(values, [lower_percentile, upper_percentile])
    clipped = np.clip(values, low, high)
    mean = float(clipped.mean())
    std = float(clipped.std())
    scale = std if std > 0 else 1.0
    out = np.zeros(image.shape, dtype=np.float32)
    out[inside] = ((clipped - mean) / scale).astype(np.float32)
    stats = {"clip": [float(low), float(high)], "mean": mean, "std": std,
             "percentiles": [lower_percentile, upper_percentile], "voxels": int(inside.sum())}
    return out, stats
