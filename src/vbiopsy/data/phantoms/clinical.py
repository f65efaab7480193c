"""Clinical and molecular variables of phantom patients.

Gliomas are bootstrapped as whole rows of the real UCSF-PDGM table bundled with vbiopsy
(501 patients), so prevalences and the correlations between age, sex, grade, IDH, 1p/19q, MGMT,
extent of resection and survival are those of a real cohort (grade 4 ≈ 80 %, grade 3 ≈ 9 %,
grade 2 ≈ 11 %; IDH-mutant ≈ 21 %; 1p/19q co-deletion only in IDH-mutant tumours). Age gets a
small Gaussian jitter (``age_jitter_years``). Cells are interpreted with the parsers of
:mod:`vbiopsy.data.schema`; their original spellings are kept for the UCSF-PDGM metadata table.

TERT promoter status is not in the table; it is drawn from literature-based rates
(:data:`TERT_RATES`, e.g. Eckel-Passow et al., NEJM 2015): 95 % in 1p/19q-co-deleted
oligodendroglioma, 10 % in IDH-mutant astrocytoma, 75 % in IDH-wild-type glioblastoma and 55 % in
IDH-wild-type grade 2–3 astrocytoma.

Non-gliomas (no grade or molecular markers) follow :data:`NON_GLIOMA_MODELS`: age, sex and extent
of resection per type, and an exponential survival time with uniform administrative censoring.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from vbiopsy.data.schema import (
    DIAGNOSES, is_missing, parse_age, parse_codel, parse_days, parse_eor, parse_event, parse_grade, parse_idh,
    parse_mgmt, parse_sex,
)
from vbiopsy.data.tables import read_csv_table

TABLE_RESOURCE = "ucsf_pdgm_clinical.csv"
UCSF_COLUMNS: tuple[str, ...] = (
    "Sex", "Age at MRI", "WHO CNS Grade", "Final pathologic diagnosis (WHO 2021)", "MGMT status", "1p/19q", "IDH",
    "1-dead 0-alive", "OS", "EOR",
)
"""Columns of the real UCSF-PDGM metadata table (after ``ID``), in order."""

TERT_RATES: dict[str, float] = {
    "oligodendroglioma": 0.95,      # IDH-mutant, 1p/19q co-deleted
    "astrocytoma_idh_mutant": 0.10,
    "glioblastoma_idh_wildtype": 0.75,
    "astrocytoma_idh_wildtype": 0.55,
}
"""Probability of a TERT promoter mutation per glioma class."""


@dataclass(frozen=True)
class NonGliomaModel:
    """Age ~ N(mean, sd) clipped to ``age_range``; P(male); EOR probabilities (GTR, STR, biopsy);
    survival ~ Exponential with ``median_os_days``, censored at Uniform(``follow_up_days``)."""

    text: str
    age_mean: float
    age_sd: float
    age_range: tuple[float, float]
    p_male: float
    eor_probs: tuple[float, float, float]
    median_os_days: float
    follow_up_days: tuple[float, float] = (90.0, 2500.0)


NON_GLIOMA_MODELS: dict[str, NonGliomaModel] = {
    # PCNSL: older adults, biopsy rather than resection, median OS ≈ 2.5 years with treatment.
    "lymphoma": NonGliomaModel("Primary CNS lymphoma", 65.0, 9.0, (30.0, 90.0), 0.55, (0.05, 0.10, 0.85), 900.0),
    # Intracranial germinoma: children and young adults, male predominance, excellent survival.
    "germinoma": NonGliomaModel("Germinoma", 18.0, 6.0, (6.0, 40.0), 0.80, (0.15, 0.15, 0.70), 20000.0),
    # "Other" is metastasis-like: older adults, often resected, median OS ≈ 10 months.
    "other": NonGliomaModel("Other: metastasis", 62.0, 10.0, (25.0, 90.0), 0.50, (0.55, 0.25, 0.20), 300.0),
}


@dataclass(frozen=True)
class ClinicalVariables:
    """One patient's clinical and molecular truth in the canonical coding of :mod:`vbiopsy.data.schema`.

    ``None`` means missing (non-gliomas have no grade/IDH/1p19q/TERT/MGMT; the real table has some
    missing cells). ``spelling`` holds the UCSF-PDGM metadata cells as written (plus ``TERT``).
    """

    diagnosis: str
    diagnosis_text: str
    sex: str
    age: int
    grade: int | None = None
    idh: int | None = None
    codel_1p19q: int | None = None
    tert: int | None = None
    mgmt: int | None = None
    os_days: float | None = None
    os_event: int | None = None
    eor: str | None = None
    source_row: int | None = None
    spelling: Mapping[str, str] = field(default_factory=dict)

    def canonical(self) -> dict[str, Any]:
        """Canonical variables keyed as in the manifest schema (age … os_event)."""
        return {
            "age": self.age, "sex": self.sex, "eor": self.eor, "grade": self.grade, "idh": self.idh,
            "codel_1p19q": self.codel_1p19q, "tert": self.tert, "mgmt": self.mgmt, "diagnosis": self.diagnosis,
            "os_days": self.os_days, "os_event": self.os_event,
        }


def _optional(parse: Any, value: str) -> Any:
    return None if is_missing(value) else parse(value)


@functools.lru_cache(maxsize=1)
def glioma_rows() -> tuple[dict[str, Any], ...]:
    """The bundled UCSF-PDGM rows, each with its raw cells (``raw``) and parsed canonical values."""
    with resources.as_file(resources.files("vbiopsy.data") / "resources" / TABLE_RESOURCE) as path:
        frame = read_csv_table(path)
    rows = []
    for index, record in enumerate(frame.to_dict(orient="records")):
        raw = {col: str(record[col]).strip() for col in UCSF_COLUMNS}
        rows.append({
            "row": index, "raw": raw,
            "sex": parse_sex(raw["Sex"]), "age": parse_age(raw["Age at MRI"]),
            "grade": parse_grade(raw["WHO CNS Grade"]), "text": raw["Final pathologic diagnosis (WHO 2021)"],
            "mgmt": _optional(parse_mgmt, raw["MGMT status"]), "codel_1p19q": _optional(parse_codel, raw["1p/19q"]),
            "idh": _optional(parse_idh, raw["IDH"]), "os_event": _optional(parse_event, raw["1-dead 0-alive"]),
            "os_days": _optional(parse_days, raw["OS"]), "eor": _optional(parse_eor, raw["EOR"]),
        })
    return tuple(rows)


def tert_probability(idh: int | None, codel: int | None, grade: int | None, diagnosis_text: str) -> float:
    """P(TERT promoter mutant) for a glioma, from :data:`TERT_RATES`."""
    if codel == 1 or "oligodendroglioma" in diagnosis_text.lower():
        return TERT_RATES["oligodendroglioma"]
    if idh == 1:
        return TERT_RATES["astrocytoma_idh_mutant"]
    return TERT_RATES["glioblastoma_idh_wildtype" if grade == 4 else "astrocytoma_idh_wildtype"]


def _draw_glioma(rng: np.random.Generator, age_jitter_years: float) -> ClinicalVariables:
    rows = glioma_rows()
    row = rows[int(rng.integers(len(rows)))]
    age = int(np.clip(np.rint(row["age"] + rng.normal(0.0, age_jitter_years)), 1, 110))
    tert = int(rng.random() < tert_probability(row["idh"], row["codel_1p19q"], row["grade"], row["text"]))
    spelling = dict(row["raw"])
    spelling["Age at MRI"] = str(age)
    spelling["TERT"] = "mutant" if tert else "wildtype"
    return ClinicalVariables(
        diagnosis="glioma", diagnosis_text=row["text"], sex=row["sex"], age=age, grade=row["grade"],
        idh=row["idh"], codel_1p19q=row["codel_1p19q"], tert=tert, mgmt=row["mgmt"], os_days=row["os_days"],
        os_event=row["os_event"], eor=row["eor"], source_row=row["row"], spelling=spelling,
    )


def _draw_non_glioma(rng: np.random.Generator, diagnosis: str) -> ClinicalVariables:
    model = NON_GLIOMA_MODELS[diagnosis]
    age = int(np.clip(np.rint(rng.normal(model.age_mean, model.age_sd)), *model.age_range))
    sex = "M" if rng.random() < model.p_male else "F"
    eor = ("GTR", "STR", "biopsy")[int(rng.choice(3, p=model.eor_probs))]
    death = rng.exponential(model.median_os_days / np.log(2.0))
    follow_up = rng.uniform(*model.follow_up_days)
    os_days = float(np.rint(min(death, follow_up)))
    event = int(death <= follow_up)
    spelling = {col: "" for col in UCSF_COLUMNS}
    spelling.update({"Sex": sex, "Age at MRI": str(age), "Final pathologic diagnosis (WHO 2021)": model.text,
                     "1-dead 0-alive": str(event), "OS": f"{os_days:.1f}", "EOR": eor, "TERT": ""})
    return ClinicalVariables(diagnosis=diagnosis, diagnosis_text=model.text, sex=sex, age=age, os_days=os_days,
                             os_event=event, eor=eor, spelling=spelling)


def draw_clinical(rng: np.random.Generator, diagnosis_mix: Mapping[str, float],
                  age_jitter_years: float = 1.5) -> ClinicalVariables:
    """Draw one patient: tumour type from ``diagnosis_mix``, then its variables (see module doc)."""
    probs = np.array([diagnosis_mix.get(d, 0.0) for d in DIAGNOSES], dtype=float)
    diagnosis = DIAGNOSES[int(rng.choice(len(DIAGNOSES), p=probs / probs.sum()))]
    if diagnosis == "glioma":
        return _draw_glioma(rng, age_jitter_years)
    return _draw_non_glioma(rng, diagnosis)


def survival_12m(os_days: float | None, os_event: int | None) -> int | None:
    """12-month survival label: 1 died before 365 days, 0 followed ≥ 365 days, ``None`` otherwise
    (alive with shorter follow-up, or unknown)."""
    if os_days is None or os_event is None:
        return None
    if os_days >= 365.0:
        return 0
    return 1 if os_event == 1 else None
