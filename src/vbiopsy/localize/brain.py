"""A brain mask when the user gives none: skull-stripped zeros, else Otsu threshold + morphology.

Skull-stripped volumes (BraTS, the MRI-Processor's output) have an exactly-zero background: the
mask is then the voxels that are non-zero in any modality. Otherwise the mean of the modalities
(each scaled by its 99th percentile) is thresholded with Otsu's method (SimpleITK), opened,
reduced to its largest component, closed and hole-filled. On an image with skull this gives the
head, not the brain: strip the skull first (``vbiopsy preprocess``) or pass a mask.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

from vbiopsy.preprocess.morphology import closing, fill_holes, largest_component, opening

ZERO_BACKGROUND_FRACTION = 0.05
"""More exact zeros than this fraction of the volume in every modality means skull-stripped."""
OPEN_MM = 2.0
CLOSE_MM = 4.0


def derive_brain_mask(images: Mapping[str, np.ndarray], spacing: tuple[float, float, float]) -> np.ndarray:
    """Boolean (X, Y, Z) brain mask of co-registered ``images`` (all the same shape).

    Returns an empty mask for images without contrast (the caller reports it).
    """
    arrays = list(images.values())
    size = arrays[0].size
    if all(np.count_nonzero(a == 0) > ZERO_BACKGROUND_FRACTION * size for a in arrays):
        mask = np.zeros(arrays[0].shape, dtype=bool)
        for a in arrays:
            mask |= a != 0
        return fill_holes(largest_component(mask)) if mask.any() else mask
    guide = np.zeros(arrays[0].shape, dtype=np.float32)
    for a in arrays:
        positive = a[a > 0]
        scale = float(np.percentile(positive, 99)) if positive.size else 0.0
        if scale > 0:
            guide += np.clip(a, 0, None).astype(np.float32) / scale
    if not np.any(guide > 0) or float(guide.max()) == float(guide.min()):
        return np.zeros(guide.shape, dtype=bool)
    image = sitk.GetImageFromArray(np.ascontiguousarray(guide.transpose(2, 1, 0)))
    binary = sitk.OtsuThreshold(image, 0, 1)  # inside (below) = 0, outside (above) = 1
    mask = sitk.GetArrayFromImage(binary).transpose(2, 1, 0).astype(bool)
    mask = opening(mask, OPEN_MM, spacing)
    if not mask.any():
        return mask
    return fill_holes(closing(largest_component(mask), CLOSE_MM, spacing))
