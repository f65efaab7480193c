"""MR contrasts synthesised from tissue partial volumes and tumour compartments (clean, relative units).

Relative signal per tissue (WM on T1 = 1; ASL is CBF in ml/100 g/min):

=========  =====  =====  =====  =====  =====
tissue     T1     T1c    T2     FLAIR  ASL
=========  =====  =====  =====  =====  =====
WM         1.00   1.00   0.40   0.45   22
GM         0.72   0.74   0.60   0.62   60
CSF        0.28   0.30   1.00   0.12   0
bone       0.08   0.08   0.05   0.05   0
scalp      1.25   1.30   0.75   0.85   0
=========  =====  =====  =====  =====  =====

Tumour compartments (see :data:`COMPARTMENTS`): necrosis is T1-dark, T2-bright and partly
FLAIR-suppressed; solid tumour has the patient's ``t2_solid`` (dark in lymphoma, bright in IDH-
mutant glioma) and, with T2-FLAIR mismatch ``m``, a FLAIR signal reduced by ``0.6 m`` in the
centre of the core (bright rim); enhancing tumour gains ``0.25 + 0.9 e`` on T1c; oedema is blended
with the underlying tissue by its weight; a cavity looks like CSF. Texture multiplies tumour
signal by ``1 + h·texture`` (half that in oedema) and calcification spots darken it. Tumour CBF is
``60 × cbf_tumour_ratio`` (× 0.8 non-enhancing, × 1.15 enhancing), oedema CBF ``22 × cbf_peri_ratio``.
"""

from __future__ import annotations

import numpy as np

from vbiopsy.data.phantoms.phenotype import NORMAL_CBF, TumourPhenotype
from vbiopsy.data.phantoms.tumour import CAVITY, ENHANCING, NECROSIS, OEDEMA, SOLID, TumourMaps

TISSUE_SIGNAL: dict[str, dict[str, float]] = {
    "t1": {"wm": 1.00, "gm": 0.72, "csf": 0.28, "bone": 0.08, "scalp": 1.25},
    "t1c": {"wm": 1.00, "gm": 0.74, "csf": 0.30, "bone": 0.08, "scalp": 1.30},
    "t2": {"wm": 0.40, "gm": 0.60, "csf": 1.00, "bone": 0.05, "scalp": 0.75},
    "flair": {"wm": 0.45, "gm": 0.62, "csf": 0.12, "bone": 0.05, "scalp": 0.85},
    "asl": {"wm": NORMAL_CBF["wm"], "gm": NORMAL_CBF["gm"], "csf": 0.0, "bone": 0.0, "scalp": 0.0},
}

COMPARTMENTS: dict[str, dict[str, float]] = {
    "necrosis": {"t1": 0.32, "t1c": 0.34, "t2": 0.95, "flair": 0.55, "asl": 6.0},
    "solid": {"t1": 0.62, "t1c": 0.62, "flair": 0.85},
    "enhancing": {"t1": 0.62, "t1c": 0.62, "flair": 0.82},
    "oedema": {"t1": 0.68, "t1c": 0.68, "t2": 0.88, "flair": 0.90},
}
CALCIFICATION_SIGNAL: dict[str, float] = {"t1": 0.8, "t1c": 0.8, "t2": 0.35, "flair": 0.4, "asl": 0.5}
"""Signal left at the centre of a calcification spot (fraction of the tumour signal)."""


def tissue_signal(modality: str, tissue: dict[str, np.ndarray]) -> np.ndarray:
    """Partial-volume weighted sum of tissue signals (grid shape, float32); absent classes count 0."""
    table = TISSUE_SIGNAL[modality]
    out = np.zeros_like(tissue["gm"])
    for name, value in table.items():
        if name in tissue and value != 0.0:
            out += np.float32(value) * tissue[name]
    return out


def compartment_signal(modality: str, pheno: TumourPhenotype, maps: TumourMaps) -> np.ndarray:
    """Signal of each tumour voxel (``maps.index`` order) before blending oedema with tissue."""
    comp = maps.compartment
    values = np.zeros(len(comp), dtype=np.float32)
    if modality == "asl":
        cbf = NORMAL_CBF["gm"] * pheno.cbf_tumour_ratio
        values[comp == NECROSIS] = COMPARTMENTS["necrosis"]["asl"]
        values[comp == SOLID] = 0.8 * cbf
        values[comp == ENHANCING] = 1.15 * cbf
        values[comp == OEDEMA] = NORMAL_CBF["wm"] * pheno.cbf_peri_ratio
    else:
        values[comp == NECROSIS] = COMPARTMENTS["necrosis"][modality]
        values[comp == OEDEMA] = COMPARTMENTS["oedema"][modality]
        values[comp == CAVITY] = TISSUE_SIGNAL[modality]["csf"]
        if modality == "t2":
            values[comp == SOLID] = pheno.t2_solid
            values[comp == ENHANCING] = pheno.t2_solid - 0.05
        else:
            values[comp == SOLID] = COMPARTMENTS["solid"][modality]
            values[comp == ENHANCING] = COMPARTMENTS["enhancing"][modality]
        if modality == "t1c":
            values[comp == SOLID] += 0.06 * pheno.enhancement
            values[comp == ENHANCING] += 0.25 + 0.9 * pheno.enhancement
        if modality == "flair":
            solid = comp == SOLID
            values[solid] *= 1.0 - 0.6 * pheno.mismatch * maps.centrality[solid]
    core = (comp != OEDEMA) & (comp != CAVITY)
    gain = np.where(core, pheno.heterogeneity, 0.5 * pheno.heterogeneity).astype(np.float32)
    values *= 1.0 + gain * maps.texture
    values *= 1.0 - maps.calcification * np.float32(1.0 - CALCIFICATION_SIGNAL[modality])
    return values


def synthesise(modality: str, tissue: dict[str, np.ndarray], pheno: TumourPhenotype, maps: TumourMaps) -> np.ndarray:
    """Clean image of one modality (grid shape, float32, relative units; ASL in ml/100 g/min)."""
    image = tissue_signal(modality, tissue)
    flat = image.reshape(-1)
    tumour = compartment_signal(modality, pheno, maps)
    weight = np.where(maps.compartment == OEDEMA, maps.oedema_weight, 1.0).astype(np.float32)
    flat[maps.index] = (1.0 - weight) * flat[maps.index] + weight * tumour
    return image
