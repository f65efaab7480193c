from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import brain, write_nifti
from vbiopsy.data.check import check_cohort
from vbiopsy.data.layouts import read_cohort, read_cohort_with_problems
from vbiopsy.data.summary import summarise


def test_clean_cohort_has_no_problems_and_measures_regions(brats2021_cohort: Path) -> None:
    result = check_cohort(read_cohort(brats2021_cohort))
    assert result.ok, result.problems
    patient = result.patients[0]
    assert patient.shape == (12, 14, 10) and patient.spacing_mm == (2.0, 2.0, 2.0)
    # legacy 4 (ET) was converted to 3: 4^3 - 2^3 voxels of 8 ml/1000 each
    assert patient.region_ml["ET"] == (64 - 8) * 0.008
    assert patient.region_ml["NETC"] == 8 * 0.008


def test_parallel_check_equals_serial(brats2021_cohort: Path) -> None:
    manifest = read_cohort(brats2021_cohort)
    a, b = check_cohort(manifest), check_cohort(manifest, jobs=2)
    assert [p.region_ml for p in a.patients] == [p.region_ml for p in b.patients]


def test_each_file_problem_is_reported(brats2021_cohort: Path) -> None:
    c0, c1, c2 = (brats2021_cohort / f"BraTS2021_{i:05d}" for i in range(3))
    write_nifti(c0 / f"{c0.name}_t2.nii.gz", brain(0, (12, 14, 11)))                 # other grid
    nan = brain(1)
    nan[0, 0, 0] = np.nan
    write_nifti(c1 / f"{c1.name}_flair.nii.gz", nan)                                 # NaN voxel
    seg = np.zeros((12, 14, 10), np.int16)
    seg[2, 2, 2] = 7
    write_nifti(c1 / f"{c1.name}_seg.nii.gz", seg)                                   # unknown label
    (c2 / f"{c2.name}_t1.nii.gz").unlink()                                           # missing file
    write_nifti(c2 / f"{c2.name}_t2.nii.gz", np.zeros((12, 14, 10), np.float32))     # empty volume
    result = check_cohort(read_cohort(brats2021_cohort))
    text = "\n".join(result.problems)
    assert "subject BraTS2021_00000: t2:" in text and "not on the grid of t1 (shape (12, 14, 11)" in text
    assert "subject BraTS2021_00001: flair:" in text and "1 voxels are NaN" in text
    assert "label values [7] are not in the brats2021 convention" in text
    assert "subject BraTS2021_00002: t1:" in text and "file not found" in text
    assert "all voxels are zero" in text
    assert len(result.problems) == 5


def test_affine_mismatch_within_and_beyond_tolerance(brats2024_cohort: Path) -> None:
    case = brats2024_cohort / "BraTS-GLI-00000-000"
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[0, 3] = 0.5
    write_nifti(case / f"{case.name}-t2w.nii.gz", brain(3), shifted)
    result = check_cohort(read_cohort(brats2024_cohort))
    assert any("affine differs by up to 0.5 mm" in p for p in result.problems)
    assert check_cohort(read_cohort(brats2024_cohort), atol_mm=1.0).ok


def test_summary_counts(ucsf_cohort: Path) -> None:
    manifest, problems = read_cohort_with_problems(ucsf_cohort)
    assert problems == []
    summary = summarise(manifest, check_cohort(manifest))
    assert summary["n_subjects"] == 3
    assert summary["classes"]["grade"] == {"2": 1, "3": 1, "4": 1, "missing": 0}
    assert summary["classes"]["idh"] == {"mutant": 2, "wildtype": 1, "missing": 0}
    assert summary["modalities"]["asl"] == {"listed": 3, "missing": 0}
    assert summary["tumour_ml"]["ET"]["median"] == round((64 - 8) * 0.008, 2)
    assert summary["n_problems"] == 0
