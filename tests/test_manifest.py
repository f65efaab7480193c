from __future__ import annotations

from pathlib import Path

import pytest

from vbiopsy.data.manifest import Manifest, read_manifest_csv
from vbiopsy.errors import CohortError, InputError


def test_csv_manifest_resolves_paths_and_parses_values(csv_cohort) -> None:
    path = csv_cohort()
    manifest = Manifest.from_csv(path)
    assert manifest.subjects == ["p0", "p1", "p2"]
    assert manifest.modalities == ("t1c", "flair")
    assert Path(manifest.row("p1")["t1c"]) == path.parent / "p1_t1c.nii.gz"
    assert manifest.column("grade") == [2, 3, 4]
    assert manifest.column("age") == [50.0, 51.0, 52.0]
    assert manifest.patient_ids() == manifest.subjects


def test_extra_nifti_column_is_a_modality_and_text_column_is_kept(csv_cohort) -> None:
    rows = [f"p{i},p{i}_t1c.nii.gz,p{i}_flair.nii.gz,50,4,p{i}_flair.nii.gz,site{i}" for i in range(3)]
    manifest = Manifest.from_csv(csv_cohort(extra_header=",dwi,site", rows=rows))
    assert manifest.modalities == ("t1c", "flair", "dwi")
    assert manifest.column("site") == ["site0", "site1", "site2"]


def test_every_bad_cell_is_listed_with_line_and_column(csv_cohort) -> None:
    rows = ["p0,p0_t1c.nii.gz,p0_flair.nii.gz,abc,4", "p1,p1_t1c.nii.gz,p1_flair.nii.gz,50,7",
            "p0,p2_t1c.nii.gz,p2_flair.nii.gz,50,4"]
    with pytest.raises(CohortError) as err:
        Manifest.from_csv(csv_cohort(rows=rows))
    problems = err.value.problems
    assert any("line 2 (subject p0): column 'age': 'abc' is not a number" in p for p in problems)
    assert any("line 3 (subject p1): column 'grade': '7' is not a WHO grade" in p for p in problems)
    assert any("line 4: duplicate subject ID 'p0' (first at line 2)" in p for p in problems)
    assert len(problems) == 3


def test_missing_subject_id_column_and_empty_table(tmp_path: Path) -> None:
    no_id = tmp_path / "a.csv"
    no_id.write_text("name,t1c\nx,x.nii.gz\n")
    with pytest.raises(InputError, match="missing required column 'subject_id'"):
        read_manifest_csv(no_id)
    empty = tmp_path / "b.csv"
    empty.write_text("subject_id,t1c\n")
    with pytest.raises(InputError, match="no patients found"):
        read_manifest_csv(empty)


def test_round_trip_writes_relative_paths(csv_cohort, tmp_path: Path) -> None:
    manifest = Manifest.from_csv(csv_cohort())
    out = manifest.to_csv(manifest.source.parent / "copy.csv")
    assert "p0_t1c.nii.gz" in out.read_text() and str(manifest.source.parent) not in out.read_text()
    again = Manifest.from_csv(out)
    assert again.column("t1c") == manifest.column("t1c")
    assert again.column("grade") == manifest.column("grade")
