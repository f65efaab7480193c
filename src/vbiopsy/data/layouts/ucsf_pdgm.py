"""UCSF-PDGM layout (TCIA): ``UCSF-PDGM-XXXX_nifti/UCSF-PDGM-XXXX_{T1,T1c,T2,FLAIR,ASL,tumor_segmentation}.nii.gz``.

The metadata table (``UCSF-PDGM-metadata*.csv``) writes IDs with three digits (``UCSF-PDGM-004``)
while folders use four (``UCSF-PDGM-0004``); IDs are matched by their number. Segmentations use
the legacy BraTS 2021 labels (1 necrotic core, 2 oedema, 4 enhancing).
"""

from __future__ import annotations

import re
from pathlib import Path

from vbiopsy.data.layouts.common import CaseFiles, assemble, find_table
from vbiopsy.data.manifest import Manifest

FOLDER = re.compile(r"^UCSF-PDGM-(\d+)(?:_nifti)?$")
SUFFIXES: dict[str, str] = {
    "t1": "T1", "t1c": "T1c", "t2": "T2", "flair": "FLAIR", "asl": "ASL", "seg": "tumor_segmentation",
}
TABLE_PATTERNS = ("UCSF-PDGM-metadata*.csv", "*metadata*.csv")


def matches(root: Path) -> bool:
    """True if ``root`` holds at least one UCSF-PDGM case folder."""
    return any(p.is_dir() and FOLDER.match(p.name) for p in root.iterdir())


def normalise_id(subject_id: str) -> str:
    """``UCSF-PDGM-004`` and ``UCSF-PDGM-0004`` → ``UCSF-PDGM-0004``; other IDs unchanged."""
    match = re.match(r"^UCSF-PDGM-(\d+)", subject_id.strip())
    return f"UCSF-PDGM-{int(match.group(1)):04d}" if match else subject_id.strip()


def read(root: Path, clinical: Path | None = None) -> tuple[Manifest, list[str]]:
    """Build the manifest of a UCSF-PDGM folder; the metadata table is found if not given."""
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and FOLDER.match(p.name)):
        sid = normalise_id(folder.name)
        stem = folder.name.removesuffix("_nifti")
        files = {col: folder / f"{stem}_{suffix}.nii.gz" for col, suffix in SUFFIXES.items()}
        cases.append(CaseFiles(sid, files))
    table = clinical if clinical is not None else find_table(root, TABLE_PATTERNS)
    return assemble(root, cases, list(SUFFIXES), clinical=table, convention="brats2021",
                    normalise=normalise_id)
