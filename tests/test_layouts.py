from __future__ import annotations

from pathlib import Path

import pytest

from vbiopsy.data.layouts import detect_layout, read_cohort, read_cohort_with_problems
from vbiopsy.errors import InputError


def test_brats2021_layout_reads_survival_table(brats2021_cohort: Path) -> None:
    assert detect_layout(brats2021_cohort) == "brats2021"
    manifest = read_cohort(brats2021_cohort)
    assert manifest.modalities == ("t1", "t1c", "t2", "flair")
    assert manifest.column("seg_convention") == ["brats2021"] * 3
    assert manifest.column("age") == [60.5, 45.0, 70.2]
    assert manifest.column("os_days") == [300.0, 900.0, 120.0]
    assert manifest.column("eor") == ["GTR", "STR", None]  # 'NA' is an empty cell
    assert manifest.row("BraTS2021_00001")["t1c"].endswith("BraTS2021_00001_t1ce.nii.gz")


def test_brats2024_layout(brats2024_cohort: Path) -> None:
    assert detect_layout(brats2024_cohort) == "brats2024"
    manifest = read_cohort(brats2024_cohort)
    assert manifest.modalities == ("t1", "t1c", "t2", "flair")
    assert manifest.row("BraTS-GLI-00000-000")["flair"].endswith("-t2f.nii.gz")
    assert manifest.column("seg_convention") == ["brats2024"] * 3
    assert manifest.column("idh") == [0, 1, 0]


def test_ucsf_layout_matches_three_and_four_digit_ids(ucsf_cohort: Path) -> None:
    assert detect_layout(ucsf_cohort) == "ucsf-pdgm"
    manifest = read_cohort(ucsf_cohort)
    assert manifest.subjects == ["UCSF-PDGM-0001", "UCSF-PDGM-0002", "UCSF-PDGM-0003"]  # 999 has no images
    assert manifest.modalities == ("t1", "t1c", "t2", "flair", "asl")
    assert manifest.column("grade") == [4, 2, 3]
    assert manifest.column("idh") == [0, 1, 1]
    assert manifest.column("codel_1p19q") == [None, 1, 0]
    assert manifest.column("mgmt") == [0, 1, None]
    assert manifest.column("os_event") == [1, 0, 0]
    assert manifest.column("diagnosis") == ["glioma"] * 3
    assert manifest.column("seg_convention") == ["brats2021"] * 3


def test_missing_file_is_kept_as_expected_path(brats2021_cohort: Path) -> None:
    (brats2021_cohort / "BraTS2021_00002" / "BraTS2021_00002_t2.nii.gz").unlink()
    manifest = read_cohort(brats2021_cohort)
    assert not Path(manifest.row("BraTS2021_00002")["t2"]).exists()  # the check will report it


def test_bad_clinical_cell_is_a_problem_with_file_and_line(brats2024_cohort: Path) -> None:
    table = brats2024_cohort / "clinical.csv"
    table.write_text(table.read_text().replace("33,F", "thirty,F"))
    _, problems = read_cohort_with_problems(brats2024_cohort)
    assert problems == [f"{table} line 3 (subject BraTS-GLI-00001-000): column 'age': 'thirty' is not a number"]


def test_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cohort folder is empty"):
        detect_layout(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no known cohort layout"):
        detect_layout(tmp_path)
    with pytest.raises(InputError, match="cohort not found"):
        detect_layout(tmp_path / "absent")
