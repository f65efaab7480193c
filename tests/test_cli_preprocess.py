"""`vbiopsy preprocess` through the command line: outputs, resume, per-patient failures."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from vbiopsy.cli import EXIT_ERROR, EXIT_PROBLEMS, app
from vbiopsy.data.check import check_cohort
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort

runner = CliRunner()


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> tuple[Path, Path]:
    generate_cohort(PhantomConfig(n_patients=2, shape=(24, 28, 24), modalities=("t1c", "flair")), tmp_path / "in")
    config = tmp_path / "pp.yaml"
    config.write_text("resample:\n  spacing_mm: 6\n")
    return tmp_path / "in", config


def test_preprocess_writes_a_checked_manifest_and_resumes(tiny_cohort, tmp_path: Path) -> None:
    cohort, config = tiny_cohort
    out = tmp_path / "out"
    args = ["preprocess", str(cohort), "--out", str(out), "--preset", "skull-stripped", "--config", str(config)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 subjects: 2 processed, 0 already done, 0 failed" in first.output
    produced = read_cohort(out / "manifest.csv")
    assert produced.modalities == ("t1c", "flair") and produced.column("seg_convention") == ["brats2024"] * 2
    assert check_cohort(produced).ok
    spacing = nib.load(produced.row(produced.subjects[0])["t1c"]).header.get_zooms()
    assert np.allclose(spacing, 6.0)
    assert (out / "preprocess_config.yaml").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 processed, 2 already done" in again.output


def test_modality_outside_the_field_of_view_fails_that_patient_only(tiny_cohort, tmp_path: Path) -> None:
    cohort, config = tiny_cohort
    flair = cohort / "UCSF-PDGM-0002_nifti" / "UCSF-PDGM-0002_FLAIR.nii.gz"
    img = nib.load(flair)
    shifted = img.affine.copy()
    shifted[:3, 3] += 1000.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), shifted), str(flair))
    out = tmp_path / "out"
    result = runner.invoke(app, ["preprocess", str(cohort), "--out", str(out), "--preset", "skull-stripped",
                                 "--config", str(config)])
    assert result.exit_code == EXIT_PROBLEMS, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "UCSF-PDGM-0002" in problems[0] and "flair" in problems[0].lower()
    assert read_cohort(out / "manifest.csv").subjects == ["UCSF-PDGM-0001"]


def test_unknown_preset_writes_nothing(tiny_cohort, tmp_path: Path) -> None:
    cohort, _ = tiny_cohort
    result = runner.invoke(app, ["preprocess", str(cohort), "--out", str(tmp_path / "out"), "--preset", "fast"])
    assert result.exit_code == EXIT_ERROR and "--preset 'fast'" in result.output
    assert not (tmp_path / "out").exists()
