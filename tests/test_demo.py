"""The README's first command, end to end on a small cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.splits import Splits


@pytest.mark.slow
def test_demo_writes_every_output_and_the_cohort_checks_clean(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--patients", "12", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "12 subjects checked: no problems" in result.output
    assert "ASLNet demo training skipped: it needs at least 30 patients (got 12)" in result.output
    assert "MGMT-Net on" in result.output and "whole-tumour Dice" in result.output
    mgmt = json.loads((out / "mgmtnet" / "metrics.json").read_text())
    assert mgmt["task"] == "profile" and mgmt["test"]["segmentation"]["n_cases"] >= 1
    assert len(list((out / "mgmtnet" / "test" / "seg").glob("*.nii.gz"))) == mgmt["test"]["segmentation"]["n_cases"]
    for name in ("demo_config.yaml", "cohort_summary.json", "cohort_summary.md", "manifest.csv", "splits.json",
                 "cohort/ground_truth.json", "cohort/UCSF-PDGM-metadata.csv"):
        assert (out / name).is_file(), name
    assert f"splits: {out / 'splits.json'}" in result.output and f"cohort: {out / 'cohort'}" in result.output
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert summary["n_subjects"] == 12 and summary["n_problems"] == 0
    assert set(summary["modalities"]) == {"t1", "t1c", "t2", "flair", "asl"}
    assert sum(summary["classes"]["diagnosis"].values()) == 12
    montage = list(out.glob("montage_*.png"))
    assert len(montage) == 1 and montage[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = read_cohort(out / "manifest.csv")
    splits = Splits.load(out / "splits.json", all_subjects=manifest.subjects)
    assert set(splits.subjects) == set(manifest.subjects)
    # a second run replaces the first demo instead of refusing the non-empty folder, and the same
    # seed gives the same cohort and splits
    first_splits = (out / "splits.json").read_text()
    first_table = (out / "cohort" / "UCSF-PDGM-metadata.csv").read_text()
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--patients", "12", "--jobs", "1"])
    assert again.exit_code == 0, again.output
    assert (out / "splits.json").read_text() == first_splits
    assert (out / "cohort" / "UCSF-PDGM-metadata.csv").read_text() == first_table


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--patients", "4"])
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.output and (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.slow
def test_demo_trains_evaluates_and_explains_aslnet_at_its_minimum_size(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--patients", "30", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    run = out / "aslnet-survival"
    assert f"aslnet_run: {run}" in result.output and "ASLNet 12-month survival on" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "survival" and "model_minus_baseline" in metrics
    assert len(list((run / "explain").glob("*_saliency.nii.gz"))) >= 1
    assert len(list(run.glob("fold_*/model.safetensors"))) == 3
