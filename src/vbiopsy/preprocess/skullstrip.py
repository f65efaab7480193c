"""Built-in brain extraction: template brain-mask propagation refined by intensity.

No weights are needed. The template's brain mask, carried onto the output grid by the template
registration, is a spatial prior that is right to within a few millimetres; the voxels of a band
around its edge are then decided from the patient's own images (all modalities at once):

1. signed distance ``d`` to the prior's edge (mm, positive inside), moved inwards by
   ``shift_mm`` (1 mm) because the MNI mask (``T1 > 0``) is a little generous;
2. a Gaussian mixture per class is fitted to the multi-modal log-intensities of voxels known
   from the prior: brain = ``3 ≤ d ≤ 10`` mm inside, non-brain = ``3 ≤ -d ≤ 12`` mm outside
   (bone, scalp, fat, muscle), each relative to the median of the deep brain;
3. in the band ``|d| < band_mm`` the posterior combines the mixtures' log-likelihood ratio with
   the spatial prior ``d / width_mm`` (a logistic), is smoothed by ``smooth_mm`` and cut at 0.5;
   outside the band the prior decides;
4. largest connected component, holes filled (ventricles, sulci and tumour cavities are brain).

On the TCGA-FG-6692 raw scans (0.9 × 0.9 × 5.5 mm, skull on) this reaches Dice 0.958 against
the BraTS brain mask, where the affine-propagated prior alone reaches about 0.92.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from vbiopsy.preprocess.morphology import Spacing, distance_to, fill_holes, largest_component

BRAIN_SHELL_MM = (3.0, 10.0)
OUTSIDE_SHELL_MM = (3.0, 12.0)
DEEP_BRAIN_MM = 5.0
MIN_SAMPLES = 60
MAX_SAMPLES = 20000


@dataclass(frozen=True)
class RefineOptions:
    """Parameters of :func:`refine_brain_mask` (mm unless stated)."""

    band_mm: float = 8.0
    shift_mm: float = 1.0
    width_mm: float = 4.0
    smooth_mm: float = 2.0
    components: int = 3
    seed: int = 0


def _crop(mask: np.ndarray, margin_vox: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin_vox`` voxels per axis, clipped to the array."""
    idx = np.argwhere(mask)
    low = np.maximum(idx.min(axis=0) - margin_vox, 0)
    high = np.minimum(idx.max(axis=0) + margin_vox + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _features(images: Mapping[str, np.ndarray], deep: np.ndarray) -> np.ndarray:
    """(N voxels, modalities) log-intensities relative to each modality's deep-brain median."""
    columns = []
    for image in images.values():
        values = image[deep]
        median = float(np.median(values[values > 0])) if np.any(values > 0) else 1.0
        columns.append(np.log1p(np.maximum(image, 0.0) / (median if median > 0 else 1.0)).ravel())
    return np.stack(columns, axis=1).astype(np.float32)


def _mixture(samples: np.ndarray, components: int, seed: int) -> GaussianMixture:
    k = max(1, min(components, samples.shape[0] // (MIN_SAMPLES // 3)))
    return GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(samples)


def intensity_log_ratio(images: Mapping[str, np.ndarray], signed: np.ndarray, covered: np.ndarray,
                        band: np.ndarray, options: RefineOptions) -> np.ndarray | None:
    """log p(x | brain) − log p(x | non-brain) for the ``band`` voxels (1-D, band order), or
    ``None`` when the shells hold too few voxels to fit the classes (tiny or odd images)."""
    rng = np.random.default_rng(options.seed)
    features = _features(images, (signed > DEEP_BRAIN_MM) & covered)
    inner = np.flatnonzero(((signed >= BRAIN_SHELL_MM[0]) & (signed <= BRAIN_SHELL_MM[1]) & covered).ravel())
    outer = np.flatnonzero(((-signed >= OUTSIDE_SHELL_MM[0]) & (-signed <= OUTSIDE_SHELL_MM[1]) & covered).ravel())
    if min(inner.size, outer.size) < MIN_SAMPLES:
        return None
    inner = rng.choice(inner, min(MAX_SAMPLES, inner.size), replace=False)
    outer = rng.choice(outer, min(MAX_SAMPLES, outer.size), replace=False)
    brain = _mixture(features[inner], options.components, options.seed)
    other = _mixture(features[outer], options.components, options.seed)
    voxels = features[np.flatnonzero(band.ravel())]
    return np.clip(brain.score_samples(voxels) - other.score_samples(voxels), -20.0, 20.0)


def refine_brain_mask(images: Mapping[str, np.ndarray], fovs: Mapping[str, np.ndarray], prior: np.ndarray,
                      spacing: Spacing, options: RefineOptions = RefineOptions()) -> np.ndarray:
    """Brain mask (bool) from a propagated template ``prior`` and the patient's images.

    Args:
        images: modality → bias-corrected image on the output grid (X, Y, Z).
        fovs: modality → voxels that modality's scan covers (same grid).
        prior: template brain probability in [0, 1] on the same grid.
        spacing: voxel size in mm.
    """
    covered = np.logical_and.reduce([np.asarray(f, dtype=bool) for f in fovs.values()])
    any_fov = np.logical_or.reduce([np.asarray(f, dtype=bool) for f in fovs.values()])
    prior_mask = prior > 0.5
    if not (prior_mask & any_fov).any():
        return prior_mask & any_fov
    margin = np.ceil((options.band_mm + OUTSIDE_SHELL_MM[1] + 2.0) / np.asarray(spacing)).astype(int)
    box = _crop(prior_mask, margin)
    prior_c, covered_c = prior_mask[box], covered[box]
    signed = np.where(prior_c, distance_to(~prior_c, spacing), -distance_to(prior_c, spacing)) - options.shift_mm
    band = (np.abs(signed) < options.band_mm) & covered_c
    logit = (signed / options.width_mm).astype(np.float32)
    ratio = intensity_log_ratio({m: im[box] for m, im in images.items()}, signed, covered_c, band, options) \
        if band.any() else None
    if ratio is not None:
        logit[band] += ratio.astype(np.float32)
    posterior = 1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0)))
    posterior = np.where(band, posterior, (signed > 0).astype(np.float32))
    if options.smooth_mm > 0:
        posterior = ndimage.gaussian_filter(posterior, [options.smooth_mm / s for s in spacing])
    brain_c = (posterior > 0.5) & any_fov[box]
    brain = np.zeros(prior.shape, dtype=bool)
    if brain_c.any():
        brain[box] = fill_holes(largest_component(brain_c))
    return brain & any_fov
