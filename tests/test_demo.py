"""``vbiopsy demo`` (and ``--quick``): from nothing to reports, on tiny cohorts.

The report HTML contents are tested in tests/report; here: every promised output exists, the printed
paths are right, the systems read the patients they should, and the config presets behave.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.config import QUICK_DEMO, DemoConfig, load_config
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.phantoms import PhantomConfig
from vbiopsy.data.splits import Splits
from vbiopsy.demo_steps import split_shortfall
from vbiopsy.errors import ConfigError
from vbiopsy.tasks.labels import TaskLabels

TINY_QUICK = {"quick": True, "n_patients": 18, "seed": 21, "glioma_fraction": 0.5, "spacing_mm": 4.0, "jobs": 1,
              "aslnet_epochs": 1, "mgmtnet_epochs": 1, "diagnoser_epochs": 1}
"""Seed 21 draws 9 gliomas (3 dead within 12 months, 5 alive after) and 3 of each other type: the fewest
that let every system make a stratified test set and 2 folds (checked by hand with ``clinical_for``)."""
PROMISED = {"config", "cohort", "summary_json", "summary_md", "manifest", "montage", "splits", "preprocessed",
            "aslnet_run", "mgmtnet_run", "diagnoser_run", "cohort_report", "patient_report_mgmtnet",
            "patient_report_diagnoser", "timings"}


def _printed_paths(stdout: str) -> dict[str, Path]:
    """The ``name: path`` lines the demo prints last on stdout."""
    paths = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.isidentifier():
            paths[name] = Path(value)
    return paths


def _run(tmp_path: Path, settings: dict[str, object], out: Path) -> object:
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(settings))
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_quick_demo_goes_from_nothing_to_reports_and_prints_every_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _run(tmp_path, TINY_QUICK, out)
    printed = _printed_paths(result.stdout)  # type: ignore[attr-defined]
    assert PROMISED <= set(printed), PROMISED - set(printed)
    for name in PROMISED:
        assert printed[name].exists() and printed[name].is_relative_to(out), (name, printed[name])
    text = result.output  # type: ignore[attr-defined]
    assert "18 subjects checked: no problems" in text and "skipped" not in text
    assert "[1/7] phantom cohort" in text and "[7/7] cohort report and patient reports" in text
    assert "demo finished in" in text

    # the resolved config: the preset filled what was not given, the explicit values won
    saved = yaml.safe_load((out / "demo_config.yaml").read_text())
    assert saved["quick"] is True and saved["n_folds"] == QUICK_DEMO["n_folds"]
    assert saved["mgmtnet_epochs"] == 1 and saved["n_patients"] == 18

    # ASLNet and MGMT-Net read the gliomas only, the diagnoser every patient
    cohort = read_cohort(printed["manifest"])
    gliomas = {s for s, d in zip(cohort.subjects, cohort.column("diagnosis")) if d == "glioma"}
    assert set(Manifest.from_csv(printed["preprocessed"]).subjects) == set(cohort.subjects)
    assert set(Manifest.from_csv(printed["preprocessed"].parent / "manifest_gliomas.csv").subjects) == gliomas
    runs = {name: printed[f"{name}_run"] for name in ("aslnet", "mgmtnet", "diagnoser")}
    splits = {name: Splits.load(run / "splits.json") for name, run in runs.items()}
    assert set(splits["mgmtnet"].subjects) == gliomas and set(splits["aslnet"].subjects) <= gliomas
    assert set(splits["diagnoser"].subjects) == set(cohort.subjects)
    for name, run in runs.items():
        assert (run / "metrics.json").is_file(), name
    assert json.loads((runs["diagnoser"] / "metrics.json").read_text())["test"]["n"] == len(splits["diagnoser"].test)

    # two patient reports of held-out test patients (two different patients), named in the output
    glioma_report, diagnosed_report = printed["patient_report_mgmtnet"], printed["patient_report_diagnoser"]
    glioma_id = glioma_report.name.removesuffix("_report.html")
    diagnosed_id = diagnosed_report.name.removesuffix("_report.html")
    assert glioma_id in splits["mgmtnet"].test and diagnosed_id in splits["diagnoser"].test
    assert glioma_id != diagnosed_id
    assert f"patient report 1: {glioma_id}, a held-out test patient of the MGMT-Net" in text
    assert f"patient report 2: {diagnosed_id}, a held-out test patient of the Adaptive-Diagnoser" in text
    assert (glioma_report.parent / f"{glioma_id}_seg.nii.gz").is_file()
    assert (diagnosed_report.parent / f"{diagnosed_id}_gradcam.nii.gz").is_file()
    for report in (glioma_report, diagnosed_report, printed["cohort_report"]):
        assert report.read_text().lstrip().lower().startswith("<!doctype html"), report

    timings = json.loads(printed["timings"].read_text())
    assert len(timings["steps_s"]) == 7 and timings["quick"] is True
    assert sum(timings["steps_s"].values()) <= timings["total_s"] + 0.5


@pytest.mark.slow
def test_demo_without_training_is_reproducible_and_replaces_the_previous_demo(tmp_path: Path) -> None:
    settings = {"n_patients": 4, "spacing_mm": 4.0, "jobs": 1, "n_folds": 2, "aslnet": False, "mgmtnet": False,
                "diagnoser": False}
    out = tmp_path / "demo"
    first = _run(tmp_path, settings, out)
    assert "reports skipped: no system was trained" in first.output  # type: ignore[attr-defined]
    printed = _printed_paths(first.stdout)  # type: ignore[attr-defined]
    assert "cohort_report" not in printed and "aslnet_run" not in printed
    assert "[4/4] cohort report and patient reports" in first.output  # type: ignore[attr-defined]
    summary = json.loads(printed["summary_json"].read_text())
    assert summary["n_subjects"] == 4 and summary["n_problems"] == 0
    assert set(summary["modalities"]) == {"t1", "t1c", "t2", "flair", "asl"}
    montage = printed["montage"]
    assert montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preprocessed = Manifest.from_csv(printed["preprocessed"])
    assert "brain_mask" in preprocessed.frame.columns and len(preprocessed) == 4
    splits_text = printed["splits"].read_text()
    table = (out / "cohort" / "UCSF-PDGM-metadata.csv").read_text()
    _run(tmp_path, settings, out)  # a second run replaces the first; the same seed gives the same cohort
    assert printed["splits"].read_text() == splits_text
    assert (out / "cohort" / "UCSF-PDGM-metadata.csv").read_text() == table


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--patients", "4"])
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.output and (tmp_path / "mine.txt").read_text() == "precious"


def test_quick_preset_fills_only_what_is_not_given() -> None:
    full, quick = DemoConfig(), DemoConfig(quick=True)
    for key, value in QUICK_DEMO.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(quick, key) == expected and getattr(full, key) != expected, key
    mixed = DemoConfig(quick=True, n_patients=12, diagnoser_epochs=7)
    assert (mixed.n_patients, mixed.diagnoser_epochs, mixed.aslnet_epochs) == (12, 7, QUICK_DEMO["aslnet_epochs"])
    assert DemoConfig(quick=False, n_patients=12).aslnet_epochs == full.aslnet_epochs


def test_quick_flag_and_yaml_reach_the_config(tmp_path: Path) -> None:
    yaml_path = tmp_path / "d.yaml"
    yaml_path.write_text("quick: true\nmgmtnet_epochs: 5\n")
    config = load_config(DemoConfig, yaml_path, n_patients=20)
    assert config.quick and config.mgmtnet_epochs == 5 and config.n_patients == 20
    assert config.aslnet_folds == QUICK_DEMO["aslnet_folds"]


@pytest.mark.parametrize(("key", "value", "named"), [
    ("n4_iterations", [0, 10], "[0, 10]"), ("test_fraction", 0.0, "0.0"), ("glioma_fraction", 1.5, "1.5"),
    ("diagnoser_folds", 1, "1"), ("quick", "sometimes", "sometimes"), ("n_patients", 3, "3"),
])
def test_bad_demo_values_are_refused_naming_them(key: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(DemoConfig, None, **{key: value})
    assert key in str(err.value) and named in str(err.value)


@pytest.mark.parametrize("fraction", [0.1, 0.35, 0.6, 1.0])
def test_diagnosis_mix_is_a_valid_phantom_mix_with_the_given_glioma_share(fraction: float) -> None:
    mix = DemoConfig(glioma_fraction=fraction).diagnosis_mix
    assert PhantomConfig(diagnosis_mix=mix).diagnosis_mix == pytest.approx(mix)
    assert mix["glioma"] == fraction and sum(mix.values()) == pytest.approx(1.0)
    assert mix["lymphoma"] == pytest.approx(mix["germinoma"]) == pytest.approx(mix["other"])


def test_split_shortfall_names_the_classes_too_rare_for_a_test_set_and_the_folds() -> None:
    # with a 0.2 test share and 2 folds a class needs 3 patients: round(3 * 0.2) = 1 to test, 2 for the folds
    # (2 patients would give round(0.4) = 0 test patients)
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    labels = TaskLabels([f"s{i}" for i in range(len(y))], y, {}, ("a", "b", "c", "d"), "diagnosis")
    assert split_shortfall(labels, ("a", "c"), 0.2, 2) is None
    reason = split_shortfall(labels, ("a", "b", "c", "d"), 0.2, 2)
    assert reason is not None and "3 patients per diagnosis class" in reason and "b: 2, d: 0" in reason
    assert "a:" not in reason and "2 folds" in reason


def _manifest_csv(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    """A manifest CSV of image paths that need not exist (the feasibility checks read labels only)."""
    import pandas as pd

    frame = pd.DataFrame([{"subject_id": f"S{i:02d}", "t1c": f"S{i:02d}_t1c.nii.gz", **row}
                          for i, row in enumerate(rows)])
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def test_each_system_is_skipped_with_its_reason_when_the_cohort_is_too_small(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vbiopsy.demo_steps import PreprocessedCohort, train_aslnet, train_diagnoser, train_mgmtnet

    # 5 gliomas: 2 died within 12 months, 3 alive after; every other type twice
    gliomas = [{"diagnosis": "glioma", "os_days": d, "os_event": e}
               for d, e in ((100, 1), (200, 1), (500, 0), (800, 1), (900, 0))]
    others = [{"diagnosis": t, "os_days": 400, "os_event": 0} for t in ("lymphoma", "germinoma", "other") for _ in "ab"]
    everyone = _manifest_csv(tmp_path, gliomas + others)
    (tmp_path / "g").mkdir()
    glioma_csv = _manifest_csv(tmp_path / "g", gliomas)
    cohort = PreprocessedCohort(tmp_path, everyone, glioma_csv)
    config = DemoConfig(aslnet_folds=2, mgmtnet_folds=2, diagnoser_folds=2)
    assert train_aslnet(config, cohort, tmp_path / "a") is None
    assert train_mgmtnet(config, cohort, tmp_path / "m") is None
    assert train_diagnoser(config, cohort, tmp_path / "d") is None
    err = capsys.readouterr().err
    assert "ASLNet demo training skipped: it needs 3 patients per survival_12m class" in err and "(got 1: 2)" in err
    assert "MGMT-Net demo training skipped: it needs at least 8 gliomas (got 5)" in err
    assert ("Adaptive-Diagnoser demo training skipped: it needs 3 patients per diagnosis class for a test set and "
            "2 folds (got lymphoma: 2, germinoma: 2, other: 2)") in err
    assert not any((tmp_path / name).exists() for name in "amd")  # nothing half-written
