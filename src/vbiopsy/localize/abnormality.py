"""Voxel abnormality cues: the signals the paper's radiological prompts ask a VLM to look for.

Each cue pairs a robust-z map (abnormal signal against the brain's own distribution) with its
contralateral excess (asymmetry across the mid-sagittal plane), oriented so that "abnormal" is
positive:

========== ================================== =======================================
cue        needs                              what it sees
========== ================================== =======================================
bright     FLAIR or T2                        hyperintense tumour and oedema
mismatch   FLAIR/T2 and T1c                   bright on FLAIR, dark on T1c (necrosis,
                                              non-enhancing mass); CSF is dark on both
enhance    T1c only                           enhancing tumour
hypo       T1c only                           dark mass on T1c
========== ================================== =======================================

``Z`` is the strongest cue's robust z, ``A`` the strongest cue's asymmetry, and the score
``S = (Z + A) / 2`` is high only where a voxel is both unusual for this brain and unlike its
mirror point (or very unusual: midline tumours have no healthy mirror).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vbiopsy.localize.config import BRIGHT_MODALITIES, CONTRAST_MODALITIES
from vbiopsy.localize.scan import Scan


@dataclass(frozen=True)
class CueMaps:
    """``z``: strongest robust-z cue, ``asym``: strongest contralateral cue, ``score``: their mean."""

    z: np.ndarray
    asym: np.ndarray
    score: np.ndarray
    cues: tuple[str, ...]


def _cue_pairs(scan: Scan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cue name → (robust-z map, asymmetry map), each oriented so abnormal is positive."""
    z, a = scan.smooth_z, scan.asymmetry
    bright = [m for m in scan.modalities if m in BRIGHT_MODALITIES]
    contrast = [m for m in scan.modalities if m in CONTRAST_MODALITIES]
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in bright:
        pairs[f"bright:{m}"] = (z[m], a[m])
        for c in contrast:
            pairs[f"mismatch:{m}-{c}"] = (z[m] - z[c], a[m] - a[c])
    if not bright:
        for c in contrast:
            pairs[f"enhance:{c}"] = (z[c], a[c])
            pairs[f"hypo:{c}"] = (-z[c], -a[c])
    if not pairs:
        raise ValueError(f"no abnormality cue for modalities {scan.modalities}; "
                         f"need one of {BRIGHT_MODALITIES + CONTRAST_MODALITIES}")
    return pairs


def cue_maps(scan: Scan) -> CueMaps:
    """The cue maps of ``scan`` (float32, 0 outside the brain)."""
    pairs = _cue_pairs(scan)
    maps = list(pairs.values())
    z = maps[0][0].copy()
    asym = maps[0][1].copy()
    for zc, ac in maps[1:]:
        np.maximum(z, zc, out=z)
        np.maximum(asym, ac, out=asym)
    score = (0.5 * (z + asym)).astype(np.float32)
    score[~scan.brain] = 0.0
    return CueMaps(z, asym, score, tuple(pairs))
