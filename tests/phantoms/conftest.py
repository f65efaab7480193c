"""Shared helpers of the phantom tests: tiny grids and planted clinical variables."""

from __future__ import annotations

from typing import Any

from vbiopsy.data.phantoms import PhantomConfig
from vbiopsy.data.phantoms.clinical import ClinicalVariables

SHAPE = (28, 32, 28)
"""About 7 mm voxels over the template's field of view: tiny but still brain-shaped."""


def tiny(n_patients: int = 4, **kwargs: Any) -> PhantomConfig:
    """A config on the tiny test grid."""
    return PhantomConfig(n_patients=n_patients, shape=kwargs.pop("shape", SHAPE), **kwargs)


def glioma(grade: int, idh: int, codel: int | None = 0, *, tert: int = 0, os_days: float = 800.0,
           os_event: int = 0) -> ClinicalVariables:
    """Planted glioma variables (for ``generate_patient(..., clinical=...)`` and ``draw_phenotype``)."""
    return ClinicalVariables(diagnosis="glioma", diagnosis_text="planted glioma", sex="F", age=50, grade=grade,
                             idh=idh, codel_1p19q=codel, tert=tert, mgmt=1, os_days=os_days, os_event=os_event,
                             eor="STR")


def non_glioma(diagnosis: str) -> ClinicalVariables:
    """Planted non-glioma variables."""
    return ClinicalVariables(diagnosis=diagnosis, diagnosis_text=diagnosis, sex="M", age=40, os_days=500.0,
                             os_event=0, eor="biopsy")
