"""Segmentation label conventions.

Inside vbiopsy every segmentation uses the **BraTS 2024** convention:
``0`` background, ``1`` NETC (non-enhancing tumour core, incl. necrosis), ``2`` SNFH (surrounding
non-enhancing FLAIR hyperintensity, i.e. oedema), ``3`` ET (enhancing tumour), ``4`` RC (resection
cavity). Older data (BraTS 2017–2021, UCSF-PDGM) use ``1`` NCR/NET, ``2`` ED, ``4`` ET and, in
BraTS 2017 only, ``3`` NET; :func:`to_brats2024` converts them.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

import numpy as np

BRATS2024_LABELS: Final[dict[int, str]] = {0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"}
"""Label value → name, the toolkit's one internal convention."""

REGIONS: Final[dict[str, tuple[int, ...]]] = {
    "NETC": (1,),
    "SNFH": (2,),
    "ET": (3,),
    "RC": (4,),
    "TC": (1, 3),
    "WT": (1, 2, 3),
}
"""Evaluation regions (BraTS 2024): single labels and the tumour-core / whole-tumour composites."""


class LabelConvention(str, Enum):
    """How label values in a segmentation file are to be read."""

    BRATS2024 = "brats2024"  # also BraTS 2023 (which has no RC voxels)
    BRATS2021 = "brats2021"  # BraTS 2017-2021, UCSF-PDGM: 1 NCR/NET, 2 ED, 4 ET (3 NET in 2017)


_LEGACY_TO_2024: Final[dict[int, int]] = {0: 0, 1: 1, 2: 2, 3: 1, 4: 3}


def known_values(convention: LabelConvention) -> frozenset[int]:
    """The label values a file in ``convention`` may contain."""
    if convention is LabelConvention.BRATS2024:
        return frozenset(BRATS2024_LABELS)
    return frozenset(_LEGACY_TO_2024)


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxel count of every value present in an integer label array (fast path: bincount)."""
    flat = labels.ravel()
    if flat.size == 0:
        return {}
    low, high = int(flat.min()), int(flat.max())
    if low >= 0 and high < 65536:
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=high + 1)
        return {int(v): int(c) for v, c in enumerate(counts) if c}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def unknown_values(labels: np.ndarray, convention: LabelConvention) -> list[int]:
    """Sorted label values in ``labels`` that ``convention`` does not define."""
    return sorted(v for v in label_counts(labels) if v not in known_values(convention))


def to_brats2024(labels: np.ndarray, convention: LabelConvention | str) -> np.ndarray:
    """Return ``labels`` (integer array, any shape) in the BraTS 2024 convention (uint8).

    Raises:
        ValueError: if ``labels`` holds a value the source convention does not define.
    """
    convention = LabelConvention(convention)
    bad = unknown_values(labels, convention)
    if bad:
        raise ValueError(f"label values {bad} are not defined in the {convention.value} convention")
    if convention is LabelConvention.BRATS2024:
        return labels.astype(np.uint8, copy=False)
    lut = np.zeros(max(_LEGACY_TO_2024) + 1, dtype=np.uint8)
    for src, dst in _LEGACY_TO_2024.items():
        lut[src] = dst
    return lut[labels.astype(np.intp, copy=False)]


def from_brats2024_to_brats2021(labels: np.ndarray) -> np.ndarray:
    """Write 2024 labels in the legacy convention (RC has no legacy label and becomes 0)."""
    bad = unknown_values(labels, LabelConvention.BRATS2024)
    if bad:
        raise ValueError(f"label values {bad} are not defined in the brats2024 convention")
    lut = np.array([0, 1, 2, 4, 0], dtype=np.uint8)
    return lut[labels.astype(np.intp, copy=False)]


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of a region name from :data:`REGIONS` in a BraTS 2024 label array."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {sorted(REGIONS)}")
    return np.isin(labels, REGIONS[region])
