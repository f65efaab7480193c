"""Shared fixtures: tiny synthetic cohorts written as real NIfTI files in every supported layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHAPE = (12, 14, 10)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI (no validation: tests also write broken images on purpose)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), str(path))
    return path


def brain(seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A smooth positive blob standing in for a brain image."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    return (np.clip(1.2 - radius, 0, None) * 100 + rng.random(shape)).astype(np.float32)


def tumour_labels(legacy: bool, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Nested sub-regions: oedema shell, enhancing rim, necrotic core (legacy: 2/4/1, 2024: 2/3/1)."""
    seg = np.zeros(shape, dtype=np.int16)
    cx, cy, cz = (s // 2 for s in shape)
    seg[cx - 3:cx + 3, cy - 3:cy + 3, cz - 3:cz + 3] = 2
    seg[cx - 2:cx + 2, cy - 2:cy + 2, cz - 2:cz + 2] = 4 if legacy else 3
    seg[cx - 1:cx + 1, cy - 1:cy + 1, cz - 1:cz + 1] = 1
    return seg


def write_brats_cases(root: Path, name: str, sep: str, suffixes: tuple[str, ...], legacy: bool) -> Path:
    """Three case folders ``<case>/<case><sep><suffix>.nii.gz`` plus ``<sep>seg``."""
    for i in range(3):
        case = name.format(i=i)
        for j, suffix in enumerate(suffixes):
            write_nifti(root / case / f"{case}{sep}{suffix}.nii.gz", brain(10 * i + j))
        write_nifti(root / case / f"{case}{sep}seg.nii.gz", tumour_labels(legacy=legacy))
    return root


@pytest.fixture
def brats2021_cohort(tmp_path: Path) -> Path:
    """Three BraTS 2018–2021 style cases plus a survival table."""
    root = write_brats_cases(tmp_path / "brats21", "BraTS2021_{i:05d}", "_", ("t1", "t1ce", "t2", "flair"), True)
    (root / "survival_data.csv").write_text(
        "Brats20ID,Age,Survival_days,Extent_of_Resection\n"
        "BraTS2021_00000,60.5,300,GTR\nBraTS2021_00001,45,900,STR\nBraTS2021_00002,70.2,120,NA\n"
    )
    return root


@pytest.fixture
def brats2024_cohort(tmp_path: Path) -> Path:
    """Three BraTS 2023/2024 style cases plus a clinical.csv in canonical columns."""
    root = write_brats_cases(tmp_path / "brats24", "BraTS-GLI-{i:05d}-000", "-", ("t1n", "t1c", "t2w", "t2f"), False)
    (root / "clinical.csv").write_text(
        "subject_id,age,sex,grade,idh\nBraTS-GLI-00000-000,50,M,4,wildtype\n"
        "BraTS-GLI-00001-000,33,F,2,mutant\nBraTS-GLI-00002-000,61,F,4,0\n"
    )
    return root


@pytest.fixture
def ucsf_cohort(tmp_path: Path) -> Path:
    """Three UCSF-PDGM style cases (4-digit folders) and a metadata table with 3-digit IDs."""
    root = tmp_path / "ucsf"
    for i in range(1, 4):
        sid = f"UCSF-PDGM-{i:04d}"
        for j, suffix in enumerate(("T1", "T1c", "T2", "FLAIR", "ASL")):
            write_nifti(root / f"{sid}_nifti" / f"{sid}_{suffix}.nii.gz", brain(10 * i + j))
        write_nifti(root / f"{sid}_nifti" / f"{sid}_tumor_segmentation.nii.gz", tumour_labels(legacy=True))
    (root / "UCSF-PDGM-metadata_v2.csv").write_text(
        "ID,Sex,Age at MRI,WHO CNS Grade,Final pathologic diagnosis (WHO 2021),MGMT status,MGMT index,1p/19q,IDH,"
        "1-dead 0-alive,OS,EOR\n"
        'UCSF-PDGM-001,M,66,4,"Glioblastoma, IDH-wildtype",negative,0,,wildtype,1,303,STR\n'
        'UCSF-PDGM-002,F,38,2,"Oligodendroglioma, IDH-mutant, 1p/19q-codeleted",positive,12,co-deletion,IDH1 p.R132H,0,2000,GTR\n'
        'UCSF-PDGM-003,F,51,3,"Astrocytoma, IDH-mutant",indeterminate,,intact,mutated (NOS),0,800,biopsy\n'
        'UCSF-PDGM-999,M,70,4,"Glioblastoma, IDH-wildtype",negative,0,,wildtype,1,100,GTR\n'
    )
    return root


@pytest.fixture
def csv_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a hand-written manifest CSV with images next to it; ``rows`` overrides cells."""

    def make(extra_header: str = "", rows: list[str] | None = None) -> Path:
        root = tmp_path / "csv"
        for i in range(3):
            write_nifti(root / f"p{i}_t1c.nii.gz", brain(i))
            write_nifti(root / f"p{i}_flair.nii.gz", brain(i + 100))
        header = "subject_id,t1c,flair,age,grade" + extra_header
        body = rows if rows is not None else [f"p{i},p{i}_t1c.nii.gz,p{i}_flair.nii.gz,{50 + i},{2 + i}" for i in range(3)]
        (root / "manifest.csv").write_text("\n".join([header, *body]) + "\n")
        return root / "manifest.csv"

    return make


def requires_shared_data(sub: str) -> pytest.MarkDecorator:
    """Skip a test when ``../shared/data/<sub>`` (real data beside the project) is absent."""
    return pytest.mark.skipif(not (SHARED_DATA / sub).exists(),
                              reason=f"real data {SHARED_DATA / sub} is not present (only on the project's machines)")
