"""Tumour rendering: BraTS 2024 sub-region labels and per-voxel compartments from the phenotype.

The tumour lives in tumour-bearing template space (points ``y`` of the global warp). Its
boundary is star-shaped and irregular: a voxel belongs to the core if its normalised radius
``ρ = |y − c| / (R (1 + a·outline(u)))`` is below 1, ``u`` being the unit direction from the
centre. Inside the core:

* necrosis — ``ρ < n (1 + 0.15·necrosis_outline(u))`` (label NETC);
* enhancing tumour — the fraction ``e^0.8`` of the remaining solid core with the highest score
  ``enhancing(y) + 2 (ρ − n)/(1 − n)``: patchy when small, a rim at the margin when large (ET);
* the rest is non-enhancing solid tumour (NETC).

Oedema (SNFH) surrounds the core in parenchyma out to ``ρ < 1 + E (0.3 + 1.1 wm)`` (× a smooth
±25 % pattern), so it spreads preferentially along white matter. An optional resection cavity
(RC) is a ball of 0.7 R next to the centre. Tumour is only drawn inside the (warped) brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vbiopsy.data.phantoms.phenotype import TumourGeometry, TumourPhenotype

NETC, SNFH, ET, RC = 1, 2, 3, 4

NECROSIS, SOLID, ENHANCING, OEDEMA, CAVITY = 1, 2, 3, 4, 5
"""Compartment codes: what a tumour voxel is made of (NETC covers both necrosis and solid)."""
COMPARTMENT_LABEL = np.array([0, NETC, NETC, ET, SNFH, RC], dtype=np.uint8)
CALCIFICATION_SD_MM = 1.5


@dataclass(frozen=True)
class TumourMaps:
    """Labels (grid shape, uint8, BraTS 2024) and, for the ``index`` voxels (flat indices, (N,))
    that carry tumour: ``compartment`` codes, ``oedema_weight`` (0–1, blend with tissue),
    ``texture`` (unit-variance pattern), ``calcification`` (0–1) and ``centrality`` (0–1, high in
    the middle of the core; drives the FLAIR side of the T2-FLAIR mismatch)."""

    labels: np.ndarray
    index: np.ndarray
    compartment: np.ndarray
    oedema_weight: np.ndarray
    texture: np.ndarray
    calcification: np.ndarray
    centrality: np.ndarray


def _directions(d: np.ndarray, r: np.ndarray) -> np.ndarray:
    return d / np.maximum(r, 1e-6)[:, None]


def _enhancing(score: np.ndarray, solid: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``fraction`` of solid voxels with the highest score."""
    if fraction <= 0.0 or not solid.any():
        return np.zeros_like(solid)
    threshold = np.quantile(score[solid], 1.0 - fraction)
    return solid & (score >= threshold)


def _calcification(points: np.ndarray, spots: np.ndarray, sd_mm: float) -> np.ndarray:
    out = np.zeros(len(points), dtype=np.float32)
    for spot in spots:
        d2 = ((points - spot.astype(np.float32)) ** 2).sum(axis=1)
        np.maximum(out, np.exp(-d2 / np.float32(2.0 * sd_mm**2)), out=out)
    return out


def render_tumour(pheno: TumourPhenotype, geo: TumourGeometry, y: np.ndarray,
                  tissue: dict[str, np.ndarray], voxel_mm: float) -> TumourMaps:
    """Label the tumour on the grid of ``y`` (3, X, Y, Z) using warped ``tissue`` partial volumes."""
    shape = y.shape[1:]
    centre = np.asarray(pheno.centre_mm, dtype=np.float32)
    reach = pheno.radius_mm * (1.0 + 3.0 * pheno.irregularity) * (1.0 + 2.5 * pheno.oedema_extent) + 2.0 * voxel_mm
    flat_y = y.reshape(3, -1)
    brain = tissue["brain"].ravel()
    near = np.flatnonzero(np.all(np.abs(flat_y - centre[:, None]) < reach, axis=0) & (brain > 0.5))
    points = flat_y[:, near].T
    d = points - centre
    r = np.sqrt((d * d).sum(axis=1))
    u = _directions(d, r)
    rho = r / (pheno.radius_mm * np.maximum(1.0 + pheno.irregularity * geo.outline(u), 0.5))

    n = pheno.necrosis_fraction
    core = rho < 1.0
    necrosis = np.zeros_like(core)
    if n > 0:
        necrosis = core & (rho < n * np.maximum(1.0 + 0.15 * geo.necrosis_outline(u), 0.5))
    solid = core & ~necrosis
    score = geo.enhancing(points) + 2.0 * (rho - n) / max(1.0 - n, 1e-3)
    enhancing = _enhancing(score, solid, pheno.et_fraction)

    gm, wm = tissue["gm"].ravel()[near], tissue["wm"].ravel()[near]
    wm_share = wm / np.maximum(brain[near], 1e-3)
    edge = 1.0 + pheno.oedema_extent * (0.3 + 1.1 * wm_share) * np.maximum(1.0 + 0.25 * geo.oedema(points), 0.3)
    oedema = ~core & (rho < edge) & (gm + wm > 0.5 * brain[near])

    compartment = np.zeros(len(near), dtype=np.uint8)
    compartment[necrosis] = NECROSIS
    compartment[solid] = SOLID
    compartment[enhancing] = ENHANCING
    compartment[oedema] = OEDEMA
    if pheno.cavity:
        dc = points - geo.cavity_centre_mm.astype(np.float32)
        rc = np.sqrt((dc * dc).sum(axis=1))
        compartment[rc < geo.cavity_radius_mm * np.maximum(1.0 + 0.1 * geo.outline(_directions(dc, rc)), 0.5)] = CAVITY

    keep = compartment > 0
    index, compartment, points, rho, edge = near[keep], compartment[keep], points[keep], rho[keep], edge[keep]
    labels = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    labels[index] = COMPARTMENT_LABEL[compartment]
    t = np.clip((rho - 1.0) / np.maximum(edge - 1.0, 1e-3), 0.0, 1.0)
    in_core = (compartment != OEDEMA) & (compartment != CAVITY)
    sd = max(CALCIFICATION_SD_MM, 0.5 * voxel_mm)
    calc = np.zeros(len(index), dtype=np.float32)
    if len(geo.calcifications_mm):
        calc[in_core] = _calcification(points[in_core], geo.calcifications_mm, sd)
    return TumourMaps(
        labels=labels.reshape(shape),
        index=index,
        compartment=compartment,
        oedema_weight=np.where(compartment == OEDEMA, 0.5 + 0.4 * (1.0 - t), 0.0).astype(np.float32),
        texture=geo.texture(points),
        calcification=calc,
        centrality=np.clip((0.85 - rho) / 0.35, 0.0, 1.0).astype(np.float32),
    )


def region_volumes_ml(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volumes (ml) of NETC, SNFH, ET, RC and the tumour core (TC) / whole tumour (WT)."""
    counts = np.bincount(labels.ravel(), minlength=5)[:5].astype(float) * voxel_ml
    out = {"NETC": counts[NETC], "SNFH": counts[SNFH], "ET": counts[ET], "RC": counts[RC]}
    out["TC"] = out["NETC"] + out["ET"]
    out["WT"] = out["TC"] + out["SNFH"]
    return {k: round(float(v), 3) for k, v in out.items()}
