"""Bad input through the command line: one clear line naming the file/row and the problem, a
non-zero exit, no traceback, and no half-written output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import brain, write_nifti
from vbiopsy.cli import EXIT_ERROR, EXIT_PROBLEMS, app

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def problem_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("problem:", "error:"))]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("vbiopsy ")


def test_check_clean_cohort_exits_zero_and_prints_summary(brats2021_cohort: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run("cohort", "check", brats2021_cohort, "--summary-json", summary)
    assert result.exit_code == 0, result.output
    assert "3 subjects checked: no problems" in result.output
    assert "Counts per class" in result.output and summary.is_file()


def _case(root: Path, i: int = 0) -> Path:
    return root / f"BraTS2021_{i:05d}"


def _truncate(root: Path) -> str:
    path = _case(root) / "BraTS2021_00000_t1.nii.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path.name


def _image_2d(root: Path) -> str:
    write_nifti(_case(root) / "BraTS2021_00000_t2.nii.gz", np.ones((12, 14), np.float32))
    return "expected a 3-D image, got a 2-D image"


def _image_4d(root: Path) -> str:
    write_nifti(_case(root) / "BraTS2021_00000_t2.nii.gz", np.ones((12, 14, 10, 3), np.float32))
    return "got a 4-D image"


def _nan(root: Path) -> str:
    data = brain(0)
    data[1, 1, 1] = np.nan
    write_nifti(_case(root) / "BraTS2021_00000_flair.nii.gz", data)
    return "1 voxels are NaN or infinite"


def _zero(root: Path) -> str:
    write_nifti(_case(root) / "BraTS2021_00000_flair.nii.gz", np.zeros((12, 14, 10), np.float32))
    return "all voxels are zero"


def _grid(root: Path) -> str:
    write_nifti(_case(root) / "BraTS2021_00000_flair.nii.gz", brain(0, (12, 14, 12)))
    return "not on the grid of t1"


def _missing(root: Path) -> str:
    (_case(root) / "BraTS2021_00000_t1ce.nii.gz").unlink()
    return "file not found"


def _label(root: Path) -> str:
    seg = np.zeros((12, 14, 10), np.int16)
    seg[3, 3, 3] = 9
    write_nifti(_case(root) / "BraTS2021_00000_seg.nii.gz", seg)
    return "label values [9] are not in the brats2021 convention"


def _age(root: Path) -> str:
    table = root / "survival_data.csv"
    table.write_text(table.read_text().replace("60.5", "sixty"))
    return "line 2 (subject BraTS2021_00000): column 'Age': 'sixty' is not a number"


@pytest.mark.parametrize("damage", [_truncate, _image_2d, _image_4d, _nan, _zero, _grid, _missing, _label, _age])
def test_check_reports_each_bad_input_on_one_line(brats2021_cohort: Path, damage) -> None:
    expected = damage(brats2021_cohort)
    result = run("cohort", "check", brats2021_cohort)
    assert result.exit_code == EXIT_PROBLEMS
    lines = problem_lines(result.output)
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "BraTS2021_00000" in lines[0]  # names the subject / file


def test_duplicate_subject_ids_in_manifest(csv_cohort) -> None:
    rows = ["p0,p0_t1c.nii.gz,p0_flair.nii.gz,50,4", "p0,p1_t1c.nii.gz,p1_flair.nii.gz,51,4"]
    result = run("cohort", "check", csv_cohort(rows=rows))
    assert result.exit_code == EXIT_PROBLEMS
    assert any("line 3: duplicate subject ID 'p0' (first at line 2)" in line for line in problem_lines(result.output))


def test_empty_cohort_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("cohort", "check", tmp_path / "empty")
    assert result.exit_code == EXIT_ERROR
    assert problem_lines(result.output) == [f"error: {tmp_path / 'empty'}: cohort folder is empty"]


def test_output_folder_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run("phantoms", blocker / "cohort", "--patients", "2")
    assert result.exit_code == EXIT_ERROR
    lines = problem_lines(result.output)
    assert len(lines) == 1 and str(blocker / "cohort") in lines[0] and "cannot create output folder" in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("phantoms", locked / "cohort", "--patients", "2")
    finally:
        locked.chmod(0o700)
    assert result.exit_code == EXIT_ERROR and "locked" in problem_lines(result.output)[0]


def test_bad_option_value_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    result = run("phantoms", out, "--patients", "0")
    assert result.exit_code == EXIT_ERROR
    lines = problem_lines(result.output)
    assert len(lines) == 1 and "n_patients" in lines[0] and "got 0" in lines[0]
    assert not out.exists()


def test_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("n_patients: 3\nspacing_mm: banana\n")
    result = run("phantoms", tmp_path / "out", "--config", cfg)
    assert result.exit_code == EXIT_ERROR
    assert "spacing_mm" in problem_lines(result.output)[0] and "banana" in problem_lines(result.output)[0]
    assert not (tmp_path / "out").exists()


def test_split_with_unknown_label_column_writes_nothing(brats2021_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "splits.json"
    result = run("cohort", "split", brats2021_cohort, "--out", out, "--label", "grade")
    assert result.exit_code == EXIT_ERROR
    assert "--label 'grade': no such column" in problem_lines(result.output)[0]
    assert not out.exists()


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, in a real process."""
    proc = subprocess.run([sys.executable, "-m", "vbiopsy.cli", "cohort", "check", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.strip() == f"error: {tmp_path / 'absent'}: cohort not found"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_manifest_command_writes_an_editable_csv(ucsf_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    result = run("cohort", "manifest", ucsf_cohort, "--out", out)
    assert result.exit_code == 0, result.output
    result = run("cohort", "check", out)  # the written manifest is itself a valid cohort
    assert result.exit_code == 0, result.output
    assert "3 subjects checked: no problems" in result.output


def test_split_command_groups_by_patient(tmp_path: Path) -> None:
    from vbiopsy.data.splits import Splits

    root = tmp_path / "c"
    rows = []
    for i in range(24):
        write_nifti(root / f"s{i}.nii.gz", brain(i, (6, 6, 6)))
        rows.append(f"s{i},pat{i // 2},s{i}.nii.gz,{2 if (i // 2) % 3 == 0 else 4}")  # two sessions per patient
    (root / "manifest.csv").write_text("subject_id,patient_id,t1c,grade\n" + "\n".join(rows) + "\n")
    out = tmp_path / "splits.json"
    result = run("cohort", "split", root, "--out", out, "--folds", "3", "--rare-classes", "train")
    assert result.exit_code == 0, result.output
    splits = Splits.load(out)
    patient = {f"s{i}": f"pat{i // 2}" for i in range(24)}
    test_patients = {patient[s] for s in splits.test}
    assert test_patients and all(patient[s] not in test_patients for f in splits.folds for s in f.train + f.val)
    bad = run("cohort", "split", root, "--out", tmp_path / "x.json", "--keep-in-train", "7")
    assert bad.exit_code == EXIT_ERROR and "--keep-in-train '7'" in problem_lines(bad.output)[0]
