"""Per-voxel features of the refinement MLP, sampled on demand from whole-volume maps.

For every modality: its robust z, the local means of that z at ``scales_mm`` (Gaussian), and its
contralateral excess (:attr:`Scan.asymmetry`); optionally the distance to the prior's centre in
units of the prior's equivalent radius. Features are standardised with the training sample's
mean and standard deviation (:class:`Standardiser`), so they are comparable across scans and
scanners.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vbiopsy.localize.scan import Scan

Index = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class FeatureSource:
    """Named whole-volume feature maps plus an optional radial position feature."""

    names: tuple[str, ...]
    maps: tuple[np.ndarray, ...]
    spacing: tuple[float, float, float]
    centre_mm: np.ndarray | None = None
    radius_mm: float = 1.0

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns :meth:`take` returns."""
        return self.names + (("distance-to-prior-centre",) if self.centre_mm is not None else ())

    def take(self, index: Index) -> np.ndarray:
        """The (N, F) float32 features of the voxels ``index`` (as from ``np.nonzero``)."""
        columns = [m[index] for m in self.maps]
        if self.centre_mm is not None:
            points = np.stack(index, axis=1) * np.asarray(self.spacing)
            columns.append(np.linalg.norm(points - self.centre_mm, axis=1) / self.radius_mm)
        return np.stack(columns, axis=1).astype(np.float32)


def feature_source(scan: Scan, scales_mm: Sequence[float], prior: np.ndarray | None = None,
                   *, position: bool = False, core_threshold: float = 0.5) -> FeatureSource:
    """Feature maps of ``scan``; ``position`` adds the radial distance to the prior's centre."""
    names, maps = [], []
    for m in scan.modalities:
        names.append(f"z:{m}")
        maps.append(scan.z[m])
        for s in scales_mm:
            names.append(f"mean{s:g}mm:{m}")
            maps.append(ndimage.gaussian_filter(scan.z[m], scan.sigma_vox(s)))
    for m in scan.modalities:
        names.append(f"asym:{m}")
        maps.append(scan.asymmetry[m])
    centre, radius = None, 1.0
    if position and prior is not None and np.any(prior >= core_threshold):
        inside = np.argwhere(prior >= core_threshold) * np.asarray(scan.spacing)
        centre = inside.mean(axis=0)
        radius = max(float(np.cbrt(len(inside) * np.prod(scan.spacing) * 3 / (4 * np.pi))), 1e-3)
    return FeatureSource(tuple(names), tuple(maps), scan.spacing, centre, radius)


@dataclass(frozen=True)
class Standardiser:
    """Feature-wise ``(x − mean) / std`` fitted on a training sample (std floored at 1e-6)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)
