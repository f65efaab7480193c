"""Real data beside the project (``../shared/data``); each test skips with a reason when absent."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA, requires_shared_data
from vbiopsy.data.check import check_cohort
from vbiopsy.data.labels import to_brats2024
from vbiopsy.data.layouts import detect_layout, read_cohort, read_cohort_with_problems
from vbiopsy.data.manifest import read_manifest_csv
from vbiopsy.data.nifti import load_volume
from vbiopsy.data.tables import read_clinical_table


@requires_shared_data("brats18")
@pytest.mark.slow
def test_brats18_cases_read_checked_and_labels_converted() -> None:
    root = SHARED_DATA / "brats18"
    assert detect_layout(root) == "brats2021"
    manifest, problems = read_cohort_with_problems(root)
    assert problems == []
    assert len(manifest) == 10 and manifest.modalities == ("t1", "t1c", "t2", "flair")
    assert manifest.row("Brats18_CBICA_ABM_1")["age"] == pytest.approx(69.9)
    assert manifest.row("Brats18_TCIA02_606_1")["idh"] == 1
    result = check_cohort(manifest, jobs=2)
    assert result.ok, result.problems
    assert {p.shape for p in result.patients} == {(240, 240, 155)}
    # every real case has an enhancing or core region after conversion; legacy 4 became ET=3
    assert all(p.region_ml["ET"] + p.region_ml["NETC"] > 0 for p in result.patients)
    seg = load_volume(manifest.row("Brats18_2013_11_1")["seg"], dtype=np.int16, allow_empty=True).array
    raw = np.asanyarray(nib.load(manifest.row("Brats18_2013_11_1")["seg"]).dataobj)
    assert set(np.unique(raw)) <= {0, 1, 2, 4} and 4 in np.unique(raw)
    converted = to_brats2024(seg, "brats2021")
    assert set(np.unique(converted)) <= {0, 1, 2, 3} and np.count_nonzero(converted == 3) == np.count_nonzero(raw == 4)


@requires_shared_data("clinical/ucsf-pdgm-metadata.csv")
def test_real_ucsf_metadata_parses_completely() -> None:
    table = read_clinical_table(SHARED_DATA / "clinical" / "ucsf-pdgm-metadata.csv")
    assert table.problems == []
    rows = table.rows
    assert len(rows) == 501
    grades = [r["grade"] for r in rows]
    assert (grades.count(2), grades.count(3), grades.count(4)) == (56, 43, 402)
    assert sum(r["os_event"] == 1 for r in rows) == 251
    assert sum(r["idh"] == 1 for r in rows) == 103  # every IDH1/IDH2 spelling counts as mutant
    codel = [r for r in rows if r["codel_1p19q"] == 1]
    assert codel and all(r["idh"] == 1 for r in codel)  # co-deletion only in IDH-mutant tumours
    assert {r["diagnosis"] for r in rows} == {"glioma"}


@requires_shared_data("tcga-fg-6692")
def test_raw_native_scans_on_different_grids_are_flagged(tmp_path: Path) -> None:
    native = SHARED_DATA / "tcga-fg-6692" / "native"
    space = SHARED_DATA / "tcga-fg-6692" / "brats_space"
    manifest_csv = tmp_path / "manifest.csv"
    manifest_csv.write_text(
        "subject_id,t1,t1c,t2,flair\n"
        f"native,{native}/TCGA-FG-6692_native_t1.nii.gz,{native}/TCGA-FG-6692_native_t1c.nii.gz,"
        f"{native}/TCGA-FG-6692_native_t2.nii.gz,{native}/TCGA-FG-6692_native_flair.nii.gz\n"
        f"bratsspace,{space}/TCGA-FG-6692_t1_bet.nii.gz,{space}/TCGA-FG-6692_t1c_bet.nii.gz,"
        f"{space}/TCGA-FG-6692_t2_bet.nii.gz,{space}/TCGA-FG-6692_fla_bet.nii.gz\n"
    )
    manifest, problems = read_manifest_csv(manifest_csv)
    assert problems == []
    result = check_cohort(manifest)
    native_problems = [p for p in result.problems if p.startswith("subject native:")]
    assert len(native_problems) == 2 and all("not on the grid of t1" in p for p in native_problems)
    assert not [p for p in result.problems if p.startswith("subject bratsspace:")]
    # the LAS native T1 is read to RAS with its 5.5 mm slices on the last axis
    t1 = load_volume(native / "TCGA-FG-6692_native_t1.nii.gz")
    assert nib.aff2axcodes(t1.affine) == ("R", "A", "S")
    assert t1.grid.spacing[2] == pytest.approx(5.5, abs=1e-3)
