"""BraTS layouts: one folder per case.

* 2018–2021: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, labels 1 NCR/NET, 2 ED, 4 ET.
* 2023/2024: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels NETC 1, SNFH 2, ET 3, RC 4
  (``-asl`` is read too, for phantom cohorts with perfusion).

Clinical data, if any, comes from a table in the cohort folder (BraTS ``survival_data.csv``,
``clinical.csv``, ``cases.csv``) or one given explicitly.
"""

from __future__ import annotations

from pathlib import Path

from vbiopsy.data.layouts.common import CaseFiles, assemble, find_table
from vbiopsy.data.manifest import Manifest

LEGACY_SUFFIXES: dict[str, str] = {"t1": "_t1", "t1c": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"}
MODERN_SUFFIXES: dict[str, str] = {
    "t1": "-t1n", "t1c": "-t1c", "t2": "-t2w", "flair": "-t2f", "asl": "-asl", "seg": "-seg",
}
TABLE_PATTERNS = ("clinical.csv", "*survival*.csv", "*Survival*.csv", "cases.csv")


def _case_folders(root: Path, suffixes: dict[str, str]) -> list[Path]:
    """Sub-folders holding ``<name><suffix>.nii.gz`` for at least two of the image suffixes."""
    images = [s for col, s in suffixes.items() if col != "seg"]
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        hits = sum((folder / f"{folder.name}{s}.nii.gz").exists() for s in images)
        if hits >= 2:
            found.append(folder)
    return found


def matches_legacy(root: Path) -> bool:
    return bool(_case_folders(root, LEGACY_SUFFIXES))


def matches_modern(root: Path) -> bool:
    return bool(_case_folders(root, MODERN_SUFFIXES))


def _read(root: Path, suffixes: dict[str, str], convention: str, clinical: Path | None) -> tuple[Manifest, list[str]]:
    cases = [
        CaseFiles(folder.name, {col: folder / f"{folder.name}{s}.nii.gz" for col, s in suffixes.items()})
        for folder in _case_folders(root, suffixes)
    ]
    table = clinical if clinical is not None else find_table(root, TABLE_PATTERNS)
    return assemble(root, cases, list(suffixes), clinical=table, convention=convention)


def read_legacy(root: Path, clinical: Path | None = None) -> tuple[Manifest, list[str]]:
    """Build the manifest of a BraTS 2018–2021 folder (labels converted on load)."""
    return _read(root, LEGACY_SUFFIXES, "brats2021", clinical)


def read_modern(root: Path, clinical: Path | None = None) -> tuple[Manifest, list[str]]:
    """Build the manifest of a BraTS 2023/2024 folder."""
    return _read(root, MODERN_SUFFIXES, "brats2024", clinical)
