"""Output layouts: file names per patient and the clinical table, as the real datasets have them.

* ``ucsf-pdgm``: ``UCSF-PDGM-0001_nifti/UCSF-PDGM-0001_{T1,T1c,T2,FLAIR,ASL,tumor_segmentation}.nii.gz``
  (four-digit IDs, legacy BraTS 2021 labels 1/2/4) and ``UCSF-PDGM-metadata.csv`` with the real
  table's columns and spellings, three-digit IDs (``UCSF-PDGM-001``) and an extra ``TERT`` column;
* ``brats2024``: ``BraTS-GLI-00001-000/BraTS-GLI-00001-000-{t1n,t1c,t2w,t2f,asl,seg}.nii.gz``
  (BraTS 2024 labels) and ``clinical.csv`` in the canonical coding of :mod:`vbiopsy.data.schema`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vbiopsy.atomic import write_text_atomic
from vbiopsy.data.labels import from_brats2024_to_brats2021
from vbiopsy.data.nifti import save_volume
from vbiopsy.data.phantoms.clinical import UCSF_COLUMNS, ClinicalVariables
from vbiopsy.data.phantoms.patient import PhantomPatient

UCSF_SUFFIXES: dict[str, str] = {"t1": "T1", "t1c": "T1c", "t2": "T2", "flair": "FLAIR", "asl": "ASL",
                                 "seg": "tumor_segmentation"}
BRATS_SUFFIXES: dict[str, str] = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f", "asl": "asl", "seg": "seg"}
UCSF_TABLE = "UCSF-PDGM-metadata.csv"
BRATS_TABLE = "clinical.csv"
UCSF_TABLE_COLUMNS: tuple[str, ...] = ("ID", *UCSF_COLUMNS, "TERT")
BRATS_TABLE_COLUMNS: tuple[str, ...] = (
    "subject_id", "age", "sex", "eor", "grade", "idh", "codel_1p19q", "tert", "mgmt", "diagnosis", "os_days",
    "os_event",
)
LABEL_CONVENTION: dict[str, str] = {"ucsf-pdgm": "brats2021", "brats2024": "brats2024"}


@dataclass(frozen=True)
class PatientNames:
    """``subject_id`` (as the layout reader reports it), ``table_id`` (as the table writes it) and
    ``files``: modality or ``seg`` → path relative to the cohort root."""

    subject_id: str
    table_id: str
    files: dict[str, str]


def patient_names(layout: str, index: int, modalities: Sequence[str]) -> PatientNames:
    """Names of patient ``index`` (0-based; IDs count from 1)."""
    number = index + 1
    if layout == "ucsf-pdgm":
        sid = f"UCSF-PDGM-{number:04d}"
        files = {key: f"{sid}_nifti/{sid}_{UCSF_SUFFIXES[key]}.nii.gz" for key in (*modalities, "seg")}
        return PatientNames(sid, f"UCSF-PDGM-{number:03d}", files)
    sid = f"BraTS-GLI-{number:05d}-000"
    files = {key: f"{sid}/{sid}-{BRATS_SUFFIXES[key]}.nii.gz" for key in (*modalities, "seg")}
    return PatientNames(sid, sid, files)


def table_name(layout: str) -> str:
    """File name of the layout's clinical table."""
    return UCSF_TABLE if layout == "ucsf-pdgm" else BRATS_TABLE


def write_patient(root: Path, layout: str, names: PatientNames, patient: PhantomPatient) -> None:
    """Write the patient's images and segmentation (each atomically) under ``root``."""
    (root / names.files["seg"]).parent.mkdir(parents=True, exist_ok=True)
    for modality, image in patient.images.items():
        save_volume(image, patient.affine, root / names.files[modality])
    seg = from_brats2024_to_brats2021(patient.seg) if layout == "ucsf-pdgm" else patient.seg
    save_volume(seg.astype(np.uint8, copy=False), patient.affine, root / names.files["seg"])


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table_rows(layout: str, rows: Sequence[tuple[str, ClinicalVariables]]) -> list[list[str]]:
    """Header plus one row per (table ID, variables) pair in the layout's columns and spellings."""
    if layout == "ucsf-pdgm":
        body = [[table_id, *(clin.spelling.get(col, "") for col in UCSF_TABLE_COLUMNS[1:])] for table_id, clin in rows]
        return [list(UCSF_TABLE_COLUMNS), *body]
    body = []
    for table_id, clin in rows:
        canonical = clin.canonical()
        body.append([table_id, *(_cell(canonical[col]) for col in BRATS_TABLE_COLUMNS[1:])])
    return [list(BRATS_TABLE_COLUMNS), *body]


def write_table(root: Path, layout: str, rows: Sequence[tuple[str, ClinicalVariables]]) -> Path:
    """Write the layout's clinical table atomically and return its path."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table_rows(layout, rows))
    return write_text_atomic(root / table_name(layout), buffer.getvalue())
