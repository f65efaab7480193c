"""Where tumours grow: candidate sites per tumour type on the fixed 4 mm reference template.

Sites follow the clinical cues of the Virtual Biopsy paper and standard neuroradiology:

* glioma — cerebral white matter at least 10 mm deep, supratentorial; 1p/19q-co-deleted tumours
  strongly prefer the frontal lobes, IDH-mutant astrocytomas mildly so (:func:`glioma_weights`);
* lymphoma (PCNSL) — deep and periventricular: 2–14 mm from the lateral/third ventricles (70 %),
  otherwise anywhere a glioma could be;
* germinoma — midline (80 %): pineal region (55 %) or suprasellar (45 %), ± 2 mm; otherwise deep
  grey matter / periventricular (basal-ganglia germinoma);
* other (metastasis-like) — the grey–white-matter junction, cerebrum or cerebellum.

Centres are world coordinates (mm) in template (MNI) space; they do not depend on the output grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vbiopsy.data.phantoms.template import Template, axis_coordinates, reference_template

PINEAL_MM = np.array([0.0, -32.0, 0.0])
SUPRASELLAR_MM = np.array([0.0, 2.0, -10.0])
FRONTAL_Y_MM = -5.0
"""Coronal plane (MNI y) taken as the posterior edge of the frontal lobes for location weights."""


@dataclass(frozen=True)
class SiteMaps:
    """Candidate voxel centres (N, 3) mm per site kind and the reference template they come from,
    with ``ventricle_mm``: distance (mm) to the nearest ventricle voxel on that template."""

    template: Template
    candidates: dict[str, np.ndarray]
    ventricle_mm: np.ndarray

    def ventricle_distance(self, point_mm: np.ndarray) -> float:
        """Distance (mm) from a world point to the ventricles (nearest reference voxel)."""
        idx = np.clip(np.rint(self.template.world_to_index(point_mm)).astype(int), 0,
                      np.array(self.template.grid.shape) - 1)
        return float(self.ventricle_mm[tuple(idx)])


def _world_points(template: Template) -> np.ndarray:
    x, y, z = axis_coordinates(template.grid)
    return np.stack(np.meshgrid(x, y, z, indexing="ij"), axis=-1)


_SITE_MAPS: list[SiteMaps] = []
"""The process's site maps once computed (or adopted from a parent process)."""


def site_maps() -> SiteMaps:
    """Candidate sites on the reference template (computed once per process)."""
    if not _SITE_MAPS:
        _SITE_MAPS.append(_build_site_maps())
    return _SITE_MAPS[0]


def adopt_site_maps(maps: SiteMaps) -> None:
    """Use site maps made elsewhere (e.g. by the parent of a worker process)."""
    _SITE_MAPS[:] = [maps]


def _build_site_maps() -> SiteMaps:
    ref = reference_template()
    pts = _world_points(ref)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    parenchyma = (ref.brain > 0.5) & (ref.gm + ref.wm > 0.5)
    brainstem = (np.abs(x) < 14) & (z < 0) & (y > -45) & (y < -5)
    infratentorial = ((y < -35) & (z < -8)) | brainstem
    ventricles = (ref.csf > 0.5) & (ref.depth_mm > 12.0)
    ventricle_mm = ndimage.distance_transform_edt(~ventricles, sampling=ref.grid.spacing).astype(np.float32)
    masks = {
        "glioma": parenchyma & (ref.wm > 0.35) & (ref.depth_mm >= 10.0) & ~infratentorial,
        "periventricular": parenchyma & (ventricle_mm >= 2.0) & (ventricle_mm <= 14.0) & (np.abs(x) <= 35)
        & ~infratentorial,
        "junction": parenchyma & (ref.gm >= 0.3) & (ref.gm <= 0.7) & (ref.wm >= 0.25) & (ref.depth_mm >= 5.0)
        & ~brainstem,
    }
    candidates = {name: pts[mask].astype(np.float64) for name, mask in masks.items()}
    return SiteMaps(ref, candidates, ventricle_mm)


def glioma_weights(points: np.ndarray, idh: int | None, codel: int | None) -> np.ndarray:
    """Relative site weights for a glioma: frontal preference grows from IDH-wild-type (none) to
    IDH-mutant astrocytoma (×3 frontal) to 1p/19q-co-deleted oligodendroglioma (≈ ×25 frontal)."""
    frontal = 1.0 / (1.0 + np.exp(-(points[:, 1] - FRONTAL_Y_MM) / 8.0))
    if codel == 1:
        return 0.15 + 4.0 * frontal
    if idh == 1:
        return 1.0 + 2.0 * frontal
    return np.ones(len(points))


def _pick(rng: np.random.Generator, points: np.ndarray, weights: np.ndarray | None, step_mm: float) -> np.ndarray:
    probs = None if weights is None else weights / weights.sum()
    centre = points[int(rng.choice(len(points), p=probs))]
    return centre + rng.uniform(-step_mm / 2, step_mm / 2, size=3)


def sample_site(rng: np.random.Generator, diagnosis: str, idh: int | None = None,
                codel: int | None = None) -> tuple[str, np.ndarray]:
    """Draw a tumour centre (mm, template space) for ``diagnosis``; returns (site name, centre)."""
    maps = site_maps()
    step = float(maps.template.grid.spacing[0])
    deep = ("periventricular", maps.candidates["periventricular"])
    if diagnosis == "germinoma":
        if rng.random() >= 0.8:
            return deep[0], _pick(rng, deep[1], None, step)
        pineal = rng.random() < 0.55
        base = PINEAL_MM if pineal else SUPRASELLAR_MM
        return ("pineal" if pineal else "suprasellar"), base + rng.normal(0.0, 2.0, size=3) * [0.5, 1.0, 1.0]
    if diagnosis == "lymphoma" and rng.random() < 0.7:
        return deep[0], _pick(rng, deep[1], None, step)
    if diagnosis == "other":
        return "grey-white junction", _pick(rng, maps.candidates["junction"], None, step)
    points = maps.candidates["glioma"]
    centre = _pick(rng, points, glioma_weights(points, idh, codel), step)
    return ("frontal" if centre[1] > FRONTAL_Y_MM else "cerebral"), centre
