"""The manifest's column schema: names, meanings and value parsers.

One row per imaging session (usually one per patient). Values are parsed from the spellings
found in real tables (UCSF-PDGM, BraTS survival CSVs, TCGA) into one canonical coding:

=============  =========================================================  =================
column         meaning                                                    canonical values
=============  =========================================================  =================
subject_id     unique ID of the row (imaging session)                     text
patient_id     patient the session belongs to (splits group on it)        text, default = subject_id
t1 t1c t2      image paths (relative to the manifest's folder or abs.)    path
flair asl …    any other column whose values end in .nii/.nii.gz too      path
seg            tumour segmentation                                        path
seg_convention label convention of ``seg``                                brats2024 | brats2021
brain_mask     binary brain mask (written by ``vbiopsy preprocess``)        path
age            age at imaging                                             years (float)
sex            sex                                                        M | F
eor            extent of resection                                        GTR | STR | biopsy
grade          WHO CNS grade                                              2 | 3 | 4
idh            IDH status                                                 1 mutant, 0 wild-type
codel_1p19q    1p/19q status                                              1 co-deleted, 0 intact
tert           TERT promoter status                                       1 mutant, 0 wild-type
mgmt           MGMT promoter status                                       1 methylated, 0 not
diagnosis      tumour type                                                glioma | lymphoma | germinoma | other
os_days        overall survival or follow-up time                         days (float ≥ 0)
os_event       death observed at ``os_days``                              1 dead, 0 censored
=============  =========================================================  =================

Missing values are empty cells (``None``), never sentinel numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair", "asl")
"""Modality columns the toolkit knows by name; other image columns are allowed."""

DIAGNOSES: tuple[str, ...] = ("glioma", "lymphoma", "germinoma", "other")
EOR_VALUES: tuple[str, ...] = ("GTR", "STR", "biopsy")
CLINICAL_COLUMNS: tuple[str, ...] = ("age", "sex", "eor")
LABEL_COLUMNS: tuple[str, ...] = (
    "grade", "idh", "codel_1p19q", "tert", "mgmt", "diagnosis", "os_days", "os_event",
)
ID_COLUMNS: tuple[str, ...] = ("subject_id", "patient_id")
SEG_COLUMNS: tuple[str, ...] = ("seg", "seg_convention")
MASK_COLUMNS: tuple[str, ...] = ("brain_mask",)
"""Derived binary masks (written by preprocessing), on the grid of the modalities."""

_MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "not available", "indeterminate", "-"})


class ValueParseError(ValueError):
    """A cell could not be parsed; the message says why (the caller adds file, row and column)."""


def split_names(value: Any) -> Any:
    """``"t1c, flair"`` → ``("t1c", "flair")``; any other value unchanged (a pydantic "before" step
    that lets YAML and the command line give a list of modality names as one string)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def is_missing(value: Any) -> bool:
    """True for empty cells: ``None``, NaN, and tokens such as ``""``, ``NA``, ``unknown``."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS


def _text(value: Any) -> str:
    return str(value).strip()


def parse_float(value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """Parse a number, optionally within ``[low, high]``."""
    try:
        number = float(_text(value))
    except ValueError:
        raise ValueParseError(f"{_text(value)!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueParseError(f"{_text(value)!r} is not a finite number")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueParseError(f"{number:g} is outside [{low:g}, {high:g}]")
    return number


def parse_age(value: Any) -> float:
    return parse_float(value, low=0.0, high=120.0)


def parse_days(value: Any) -> float:
    return parse_float(value, low=0.0, high=36500.0)


def parse_sex(value: Any) -> str:
    text = _text(value).lower()
    if text in {"m", "male", "man"}:
        return "M"
    if text in {"f", "female", "woman"}:
        return "F"
    raise ValueParseError(f"{_text(value)!r} is not a sex (expected M or F)")


def parse_eor(value: Any) -> str:
    text = _text(value).lower().replace("-", " ").replace("_", " ")
    if text in {"gtr", "total", "gross total", "gross total resection", "complete"}:
        return "GTR"
    if text in {"str", "subtotal", "sub total", "subtotal resection", "partial", "ptr"}:
        return "STR"
    if text in {"biopsy", "bx", "biopsy only", "b"}:
        return "biopsy"
    raise ValueParseError(f"{_text(value)!r} is not an extent of resection (expected GTR, STR or biopsy)")


_ROMAN = {"ii": 2, "iii": 3, "iv": 4}


def parse_grade(value: Any) -> int:
    text = _text(value).lower().removeprefix("who").removeprefix("grade").removeprefix("g").strip()
    if text in _ROMAN:
        return _ROMAN[text]
    try:
        number = float(text)
    except ValueError:
        raise ValueParseError(f"{_text(value)!r} is not a WHO grade (expected 2, 3 or 4)") from None
    if number not in (2.0, 3.0, 4.0):
        raise ValueParseError(f"{_text(value)!r} is not a WHO grade (expected 2, 3 or 4)")
    return int(number)


def _binary(value: Any, positive: tuple[str, ...], negative: tuple[str, ...], what: str) -> int:
    text = _text(value).lower()
    if text in {"1", "1.0", "true", "yes"}:
        return 1
    if text in {"0", "0.0", "false", "no"}:
        return 0
    if any(re.search(p, text) for p in negative):
        return 0
    if any(re.search(p, text) for p in positive):
        return 1
    raise ValueParseError(f"{_text(value)!r} is not a {what}")


def parse_idh(value: Any) -> int:
    """``wildtype``→0; ``mutant``, ``mutated (NOS)``, ``IDH1 p.R132H``…→1."""
    return _binary(value, (r"mut", r"r132", r"r172", r"arg1[37]2", r"^positive$"),
                   (r"wild", r"^wt$", r"^negative$"), "IDH status (wildtype/mutant)")


def parse_codel(value: Any) -> int:
    """``intact``→0; ``co-deletion``, ``codeleted``, ``relative co-deletion``→1."""
    return _binary(value, (r"co-?del", r"^deleted$", r"^positive$"),
                   (r"intact", r"non-?codel", r"not co-?del", r"^negative$"), "1p/19q status (intact/co-deleted)")


def parse_tert(value: Any) -> int:
    return _binary(value, (r"mut", r"c228t", r"c250t", r"^positive$"),
                   (r"wild", r"^wt$", r"^negative$"), "TERT status (wildtype/mutant)")


def parse_mgmt(value: Any) -> int:
    """UCSF-PDGM writes ``positive`` for methylated, ``negative`` for unmethylated."""
    return _binary(value, (r"^methylated$", r"^positive$", r"^meth"),
                   (r"unmeth", r"^negative$", r"not meth"), "MGMT status (methylated/unmethylated)")


def parse_event(value: Any) -> int:
    text = _text(value).lower()
    if text in {"dead", "deceased", "died"}:
        return 1
    if text in {"alive", "censored", "living"}:
        return 0
    try:
        number = float(text)
    except ValueError:
        raise ValueParseError(f"{_text(value)!r} is not an event indicator (expected 1 dead or 0 alive)") from None
    if number not in (0.0, 1.0):
        raise ValueParseError(f"{_text(value)!r} is not an event indicator (expected 1 dead or 0 alive)")
    return int(number)


def parse_diagnosis(value: Any) -> str:
    """Map a pathology text to a tumour type; glioma subtypes → ``glioma``, PCNSL/DLBCL → ``lymphoma``."""
    text = _text(value).lower()
    if text in DIAGNOSES:
        return text
    if re.search(r"gliom|glioblast|astrocyt|oligodendro|\bgbm\b", text):
        return "glioma"
    if re.search(r"lymphom|pcnsl|dlbcl", text):
        return "lymphoma"
    if re.search(r"germinom", text):
        return "germinoma"
    if text.startswith("other"):
        return "other"
    raise ValueParseError(f"{_text(value)!r} is not a known tumour type (expected one of {', '.join(DIAGNOSES)})")


def parse_convention(value: Any) -> str:
    text = _text(value).lower().replace(" ", "")
    aliases = {"brats2024": "brats2024", "brats2023": "brats2024", "2024": "brats2024", "2023": "brats2024",
               "brats2021": "brats2021", "brats2018": "brats2021", "legacy": "brats2021", "2021": "brats2021",
               "ucsf-pdgm": "brats2021"}
    if text not in aliases:
        raise ValueParseError(f"{_text(value)!r} is not a label convention (expected brats2024 or brats2021)")
    return aliases[text]


@dataclass(frozen=True)
class Column:
    """A known manifest column: its canonical name, parser and the names other tables use for it."""

    name: str
    parse: Callable[[Any], Any]
    aliases: tuple[str, ...] = ()


KNOWN_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("age", parse_age, ("age at mri", "age_years", "age (years)", "age_at_diagnosis")),
        Column("sex", parse_sex, ("gender",)),
        Column("eor", parse_eor, ("resectionstatus", "extent_of_resection", "resection", "extent of resection")),
        Column("grade", parse_grade, ("who cns grade", "who_grade", "who grade")),
        Column("idh", parse_idh, ("idh_status", "idh status", "idh1")),
        Column("codel_1p19q", parse_codel, ("1p/19q", "1p19q", "codel", "1p/19q status")),
        Column("tert", parse_tert, ("tert_status", "tert status", "tert promoter")),
        Column("mgmt", parse_mgmt, ("mgmt status", "mgmt_status")),
        Column("diagnosis", parse_diagnosis, ("final pathologic diagnosis (who 2021)", "tumor_type", "tumour_type")),
        Column("os_days", parse_days, ("os", "survival", "survival_days", "overall survival", "os (days)")),
        Column("os_event", parse_event, ("1-dead 0-alive", "vital_status", "event", "death")),
        Column("seg_convention", parse_convention, ("label_convention",)),
    )
}

_ALIAS_TO_NAME: dict[str, str] = {
    alias: col.name for col in KNOWN_COLUMNS.values() for alias in (col.name, *col.aliases)
}


def canonical_column(name: str) -> str | None:
    """The canonical name for a table header (case-insensitive), or ``None`` if unknown."""
    return _ALIAS_TO_NAME.get(name.strip().lower())
