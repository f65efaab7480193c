"""The planted imaging phenotype: latent tumour factors drawn from the clinical variables with noise.

Every factor depends on the patient's variables through a documented mean plus noise, so each
task is learnable but not trivial (numbers are relative to normal tissue, never global intensity):

=================  ==========================================================================
factor             gliomas (grade 2 / 3 / 4)                    non-gliomas
=================  ==========================================================================
enhancement e      0.15 / 0.40 / 0.70, −0.15 if IDH-mutant,      lymphoma 0.85, germinoma 0.70,
(0–1)              + N(0, 0.20)                                 other 0.80 (+ N(0, 0.12))
necrosis n         0 / 0.10 / 0.40, −0.12 IDH-mut, +0.05 TERT,   lymphoma/germinoma none (10/20 %:
(radius fraction)  + N(0, 0.18); < 0.1 → none                   0.2/0.3), other 0.55 (± 0.15)
oedema extent E    0.25 / 0.45 / 0.75 × 0.8 if IDH-mut,          lymphoma 0.6, germinoma 0.15,
(× radius)         × LogNormal(0, 0.45)                          other 1.5 (× LogNormal(0, 0.45))
tumour CBF / GM    0.80 / 1.10 / 1.60 × 0.85 if IDH-mut,         lymphoma 0.95, germinoma 0.9,
                   × LogNormal(0, 0.35)                          other 1.4 (× LogNormal(0, 0.35))
peri CBF / WM      exp(0.35 s + N(0, 0.2)), s = early-death score (all types)
T2-FLAIR mismatch  IDH-mut 1p/19q-intact: U(0.5, 1) with p 0.45, otherwise U(0, 0.25)
heterogeneity      co-deleted 0.16 ± 0.05, others 0.09 ± 0.04    0.05–0.08 ± 0.04
calcifications     Poisson(3) co-deleted, 0.8 IDH-mut, 0.3 IDH-wt  germinoma 1.0, others 0.2
solid T2           0.80 + 0.03 IDH-mut + 0.10 m, ± 0.08          lymphoma 0.62, germinoma 0.68,
(WM 0.40, CSF 1)                                                other 0.74 (± 0.08)
radius (mm)        median 17 / 17 / 19, LogNormal σ 0.25         13 / 11 / 10, σ 0.3
                   (8–28 mm)                                    (6–28 mm)
=================  ==========================================================================

Oedema thickness ``E × radius`` is capped at 30 mm.

The early-death score ``s`` is ``1 / (1 + exp((OS − 365) / 90))`` for patients who died and 0 for
censored ones, so peritumoural perfusion is higher in patients who died within about a year.
Sites come from :mod:`vbiopsy.data.phantoms.sites`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vbiopsy.data.phantoms.clinical import ClinicalVariables
from vbiopsy.data.phantoms.fields import FourierField
from vbiopsy.data.phantoms.sites import sample_site, site_maps

GLIOMA_BY_GRADE: dict[int, dict[str, float]] = {
    2: {"enhancement": 0.15, "necrosis": 0.00, "oedema": 0.25, "cbf": 0.80, "radius": 17.0, "irregularity": 0.12,
        "mass_effect": 0.30},
    3: {"enhancement": 0.40, "necrosis": 0.10, "oedema": 0.45, "cbf": 1.10, "radius": 17.0, "irregularity": 0.16,
        "mass_effect": 0.35},
    4: {"enhancement": 0.70, "necrosis": 0.40, "oedema": 0.75, "cbf": 1.60, "radius": 19.0, "irregularity": 0.22,
        "mass_effect": 0.55},
}
NON_GLIOMA: dict[str, dict[str, float]] = {
    "lymphoma": {"enhancement": 0.85, "necrosis": 0.20, "p_necrosis": 0.10, "oedema": 0.60, "cbf": 0.95,
                 "t2": 0.62, "radius": 13.0, "irregularity": 0.15, "mass_effect": 0.35, "heterogeneity": 0.05,
                 "calcifications": 0.2},
    "germinoma": {"enhancement": 0.70, "necrosis": 0.30, "p_necrosis": 0.20, "oedema": 0.15, "cbf": 0.90,
                  "t2": 0.68, "radius": 11.0, "irregularity": 0.08, "mass_effect": 0.50, "heterogeneity": 0.08,
                  "calcifications": 1.0},
    "other": {"enhancement": 0.80, "necrosis": 0.55, "p_necrosis": 1.00, "oedema": 1.50, "cbf": 1.40,
              "t2": 0.74, "radius": 10.0, "irregularity": 0.08, "mass_effect": 0.60, "heterogeneity": 0.06,
              "calcifications": 0.2},
}


NORMAL_CBF: dict[str, float] = {"gm": 60.0, "wm": 22.0}
"""Normal cerebral blood flow (ml/100 g/min) that the CBF ratios refer to."""
MAX_OEDEMA_MM = 30.0
"""Cap on the mean oedema thickness (oedema extent × radius) so oedema stays within a hemisphere."""


@dataclass(frozen=True)
class TumourPhenotype:
    """Scalar latent factors of one tumour (units in the module table); all go to ground truth."""

    diagnosis: str
    site: str
    centre_mm: tuple[float, float, float]
    radius_mm: float
    irregularity: float
    enhancement: float
    necrosis_fraction: float
    oedema_extent: float
    cbf_tumour_ratio: float
    cbf_peri_ratio: float
    mismatch: float
    heterogeneity: float
    n_calcifications: int
    t2_solid: float
    mass_effect: float
    early_death: float
    ventricle_distance_mm: float
    cavity: bool

    @property
    def et_fraction(self) -> float:
        """Fraction of the non-necrotic core that enhances (patchy when small, a rim when large)."""
        return float(self.enhancement ** 0.8) if self.enhancement > 0.05 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready factors (rounded), plus the ET fraction and absolute CBF in ml/100 g/min."""
        out = asdict(self)
        out["centre_mm"] = [round(float(c), 3) for c in self.centre_mm]
        out["et_fraction"] = round(self.et_fraction, 4)
        out["cbf_tumour_ml_100g_min"] = NORMAL_CBF["gm"] * self.cbf_tumour_ratio
        out["cbf_peri_ml_100g_min"] = NORMAL_CBF["wm"] * self.cbf_peri_ratio
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


@dataclass(frozen=True)
class TumourGeometry:
    """Random fields and points that shape one tumour (world mm, template space).

    ``outline``/``necrosis_outline`` act on unit directions (irregular star-shaped boundaries);
    ``texture``, ``enhancing``, ``oedema`` act on positions (wavelengths 6–30 mm).
    """

    outline: FourierField
    necrosis_outline: FourierField
    texture: FourierField
    enhancing: FourierField
    oedema: FourierField
    calcifications_mm: np.ndarray
    cavity_centre_mm: np.ndarray
    cavity_radius_mm: float


def early_death_score(os_days: float | None, os_event: int | None) -> float:
    """Survival latent in [0, 1]: ≈ 1 for death well before a year, 0 for censored patients."""
    if not os_event:
        return 0.0
    if os_days is None:
        return 0.5
    return float(1.0 / (1.0 + np.exp((os_days - 365.0) / 90.0)))


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * np.exp(rng.normal(0.0, sigma)))


def _glioma_factors(rng: np.random.Generator, clin: ClinicalVariables) -> dict[str, float]:
    grade = clin.grade if clin.grade in GLIOMA_BY_GRADE else 4
    base = GLIOMA_BY_GRADE[grade]
    mutant = clin.idh == 1
    codel = clin.codel_1p19q == 1
    necrosis = base["necrosis"] - 0.12 * mutant + 0.05 * (clin.tert == 1) + rng.normal(0.0, 0.18)
    mismatch = rng.uniform(0.5, 1.0) if (mutant and not codel and rng.random() < 0.45) else rng.uniform(0.0, 0.25)
    calc_rate = 3.0 if codel else (0.8 if mutant else 0.3)
    return {
        "enhancement": float(np.clip(base["enhancement"] - 0.15 * mutant + rng.normal(0.0, 0.2), 0.0, 1.0)),
        "necrosis_fraction": float(np.clip(necrosis, 0.0, 0.75)) if necrosis >= 0.1 else 0.0,
        "oedema_extent": base["oedema"] * (0.8 if mutant else 1.0) * _lognormal(rng, 1.0, 0.45),
        "cbf_tumour_ratio": base["cbf"] * (0.85 if mutant else 1.0) * _lognormal(rng, 1.0, 0.35),
        "mismatch": float(mismatch),
        "heterogeneity": float(np.clip(rng.normal(0.16, 0.05) if codel else rng.normal(0.09, 0.04), 0.02, 0.4)),
        "n_calcifications": int(rng.poisson(calc_rate)),
        "t2_solid": float(0.80 + 0.03 * mutant + 0.10 * mismatch + rng.normal(0.0, 0.08)),
        "radius_mm": float(np.clip(_lognormal(rng, base["radius"], 0.25), 8.0, 28.0)),
        "irregularity": float(np.clip(rng.normal(base["irregularity"], 0.04), 0.03, 0.35)),
        "mass_effect": base["mass_effect"],
    }


def _non_glioma_factors(rng: np.random.Generator, diagnosis: str) -> dict[str, float]:
    base = NON_GLIOMA[diagnosis]
    has_necrosis = rng.random() < base["p_necrosis"]
    necrosis = float(np.clip(rng.normal(base["necrosis"], 0.15), 0.15, 0.75)) if has_necrosis else 0.0
    return {
        "enhancement": float(np.clip(rng.normal(base["enhancement"], 0.12), 0.0, 1.0)),
        "necrosis_fraction": necrosis,
        "oedema_extent": base["oedema"] * _lognormal(rng, 1.0, 0.45),
        "cbf_tumour_ratio": base["cbf"] * _lognormal(rng, 1.0, 0.35),
        "mismatch": float(rng.uniform(0.0, 0.25)),
        "heterogeneity": float(np.clip(rng.normal(base["heterogeneity"], 0.04), 0.02, 0.4)),
        "n_calcifications": int(rng.poisson(base["calcifications"])),
        "t2_solid": float(base["t2"] + rng.normal(0.0, 0.08)),
        "radius_mm": float(np.clip(_lognormal(rng, base["radius"], 0.3), 6.0, 28.0)),
        "irregularity": float(np.clip(rng.normal(base["irregularity"], 0.03), 0.03, 0.35)),
        "mass_effect": base["mass_effect"],
    }


def _random_ball(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points uniform in the unit ball, (n, 3)."""
    direction = rng.normal(size=(n, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    return direction * rng.random(n)[:, None] ** (1.0 / 3.0)


def draw_phenotype(rng: np.random.Generator, clin: ClinicalVariables,
                   cavity_prob: float = 0.0) -> tuple[TumourPhenotype, TumourGeometry]:
    """Draw the latent factors and shape fields of one patient's tumour (grid-independent)."""
    factors = _glioma_factors(rng, clin) if clin.diagnosis == "glioma" else _non_glioma_factors(rng, clin.diagnosis)
    site, centre = sample_site(rng, clin.diagnosis, clin.idh, clin.codel_1p19q)
    death = early_death_score(clin.os_days, clin.os_event)
    cbf_peri = float(np.exp(0.35 * death + rng.normal(0.0, 0.2)))
    cavity = bool(rng.random() < cavity_prob)
    radius = factors["radius_mm"]
    factors["oedema_extent"] = float(min(factors["oedema_extent"], MAX_OEDEMA_MM / radius))
    n_calc = factors["n_calcifications"]
    geometry = TumourGeometry(
        outline=FourierField.random(rng, 12, (1.5, 4.0)),
        necrosis_outline=FourierField.random(rng, 8, (1.5, 4.0)),
        texture=FourierField.random(rng, 16, (6.0, 15.0)),
        enhancing=FourierField.random(rng, 12, (8.0, 20.0)),
        oedema=FourierField.random(rng, 12, (12.0, 30.0)),
        calcifications_mm=centre + 0.75 * radius * _random_ball(rng, n_calc),
        cavity_centre_mm=centre + 0.3 * radius * _random_ball(rng, 1)[0],
        cavity_radius_mm=float(0.7 * radius * rng.uniform(0.8, 1.1)),
    )
    phenotype = TumourPhenotype(
        diagnosis=clin.diagnosis, site=site, centre_mm=tuple(float(c) for c in centre),  # type: ignore[arg-type]
        ventricle_distance_mm=site_maps().ventricle_distance(centre), early_death=death, cbf_peri_ratio=cbf_peri,
        cavity=cavity, **factors,
    )
    return phenotype, geometry
