"""Adaptive-Diagnoser runs end to end on a tiny phantom cohort: outputs, determinism, no test-label reads,
rare-class error, empty-prior fallback, Table 2 / Table 3, Grad-CAM and single-case diagnosis.

A 12-patient cohort (3 per tumour type, seed 20) is written once at a tiny shape; every run shares one
sample cache (keyed by the image files and settings), so the localiser runs once per patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.errors import ConfigError
from vbiopsy.train.checkpoint import load_checkpoint
from vbiopsy.train.diagnosis_config import load_diagnosis_config
from vbiopsy.train.diagnosis_predict import diagnose_case
from vbiopsy.train.diagnosis_gradcam import gradcam_overlays
from vbiopsy.train.diagnosis_run import ablation_table, backbone_table, evaluate_diagnosis, run_cross_validation

pytestmark = pytest.mark.slow

TINY = {"data": {"folds": 2, "test_fraction": 0.25, "working_shape": [16, 16, 16], "early_stopping_fraction": 0.0,
                 "localizer": {"require_lesion": False, "refine": {"steps": 20}}},
        "model": {"backbone_options": {"width": "tiny"}},
        "optim": {"max_epochs": 2, "precision": "32", "lr": 1e-3, "seed": 0},
        "explain": {"max_patients": 2}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diagnose") / "cohort"
    mix = {d: 0.25 for d in DIAGNOSES}
    generate_cohort(PhantomConfig(n_patients=12, shape=(32, 36, 32), seed=20, diagnosis_mix=mix), root)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("samples")


@pytest.fixture(scope="module")
def first_run(cohort: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_cross_validation(config_for(cohort), tmp_path_factory.mktemp("runs") / "run1", cache_dir=cache)


def config_for(cohort: Path, **sections: dict) -> object:
    merged = {key: {**TINY.get(key, {}), **sections.get(key, {})} for key in {*TINY, *sections}}
    merged["data"]["cohort"] = str(cohort)
    return load_diagnosis_config(None, merged)


def manifest_csv(cohort: Path, path: Path, edit: dict[str, str] | None = None) -> Path:
    manifest = read_cohort(cohort)
    for subject, diagnosis in (edit or {}).items():
        manifest.frame.loc[manifest.frame["subject_id"] == subject, "diagnosis"] = diagnosis
    manifest.to_csv(path)
    return path


def test_cross_validation_writes_one_row_per_patient_and_repeats_exactly(first_run: Path, cohort: Path, cache: Path,
                                                                         tmp_path: Path) -> None:
    splits = json.loads((first_run / "splits.json").read_text())
    oof = pd.read_csv(first_run / "oof_predictions.csv")
    pool = sorted(s for fold in splits["folds"] for s in fold["val"])
    assert sorted(oof["subject_id"]) == pool and len(splits["test"]) == 4  # one test patient per class
    columns = [f"p_{d}" for d in DIAGNOSES]
    np.testing.assert_allclose(oof[columns].sum(axis=1), 1.0, atol=1e-5)
    test = pd.read_csv(first_run / "test_predictions.csv")
    assert sorted(test["subject_id"]) == sorted(splits["test"]) and "target" not in test.columns
    assert len(pd.read_csv(first_run / "patients.csv")) == 12
    state, meta = load_checkpoint(first_run / "fold_1" / "model.safetensors")
    assert meta["task"] == "diagnosis" and meta["classes"] == list(DIAGNOSES) and state
    metrics = evaluate_diagnosis(first_run)
    matrix = np.array(metrics["pooled_oof"]["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == len(pool) and matrix.sum(1).tolist() == [2, 2, 2, 2]
    assert len(metrics["folds"]) == 2 and metrics["test"]["n"] == 4
    fold_acc = [f["accuracy"] for f in metrics["folds"]]
    assert metrics["fold_mean"]["accuracy"] == pytest.approx(np.mean(fold_acc), abs=1e-4)
    assert metrics["fold_sd"]["accuracy"] == pytest.approx(np.std(fold_acc, ddof=1), abs=1e-4)
    again = run_cross_validation(config_for(cohort), tmp_path / "run2", cache_dir=cache)
    for name in ("oof_predictions.csv", "test_predictions.csv", "fold_0/history.csv"):
        assert (first_run / name).read_bytes() == (again / name).read_bytes(), name


def test_poisoned_test_labels_change_nothing_before_the_final_evaluation(first_run: Path, cohort: Path, cache: Path,
                                                                         tmp_path: Path) -> None:
    test_ids = json.loads((first_run / "splits.json").read_text())["test"]
    truth = read_cohort(cohort).frame.set_index("subject_id")["diagnosis"]
    poison = {s: DIAGNOSES[(DIAGNOSES.index(truth[s]) + 1) % 4] for s in test_ids}  # every test label wrong
    csv = manifest_csv(cohort, tmp_path / "poisoned.csv", poison)
    config = config_for(csv, data={"splits": str(first_run / "splits.json")})
    poisoned = run_cross_validation(config, tmp_path / "poisoned", cache_dir=cache)
    for name in ("oof_predictions.csv", "test_predictions.csv"):
        assert (first_run / name).read_bytes() == (poisoned / name).read_bytes(), name
    weights, _ = load_checkpoint(first_run / "fold_0" / "model.safetensors")
    again, _ = load_checkpoint(poisoned / "fold_0" / "model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights) and weights.keys() == again.keys()
    clean = np.array(evaluate_diagnosis(first_run)["test"]["confusion_matrix"])
    shifted = np.array(evaluate_diagnosis(poisoned)["test"]["confusion_matrix"])
    np.testing.assert_array_equal(shifted, np.roll(clean, 1, axis=0))  # evaluation is what reads them


def test_a_class_rarer_than_the_folds_is_one_error_naming_it(cohort: Path, tmp_path: Path) -> None:
    frame = read_cohort(cohort).frame
    germinomas = list(frame.loc[frame["diagnosis"] == "germinoma", "subject_id"])
    csv = manifest_csv(cohort, tmp_path / "rare.csv", {s: "glioma" for s in germinomas[1:]})
    with pytest.raises(ConfigError, match="'germinoma' has 1 patient"):
        run_cross_validation(config_for(csv, data={"test_fraction": 0.0}), tmp_path / "rare")
    assert not list((tmp_path / "rare").glob("fold_*"))


def test_an_empty_prior_is_recorded_per_patient_and_the_run_goes_on(cohort: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import vbiopsy.train.diagnosis_data as data_module
    from vbiopsy.data.nifti import load_volume
    from vbiopsy.localize import LocalizationResult, Proposals

    manifest = read_cohort(cohort)
    blank = manifest.subjects[0]

    def localize_scan(paths: dict, settings: object, subject_id: str = "") -> tuple:
        """A localiser that finds the manual tumour, except for ``blank`` where it finds nothing."""
        image = load_volume(paths["image"])
        lesion = load_volume(manifest.row(subject_id)["seg"], dtype=np.uint8).array > 0
        lesion &= subject_id != blank
        prior = lesion.astype(np.float32)
        return image, LocalizationResult(prior, lesion, prior, lesion, image.array > 0,
                                         Proposals.from_boxes(lesion.shape, {}, "fake"), {"proposer": "fake"})

    monkeypatch.setattr(data_module, "localize_scan", localize_scan)
    run = run_cross_validation(config_for(cohort, optim={"max_epochs": 1}), tmp_path / "run",
                               cache_dir=tmp_path / "samples")
    records = pd.read_csv(run / "patients.csv", keep_default_na=False).set_index("subject_id")
    assert records.loc[blank, "warnings"] == ("coarse prior empty (no lesion found); whole-brain prior used; "
                                              "refined prior empty (no lesion found); whole-brain prior used")
    assert not records.loc[blank, "found"] and records.drop(index=blank)["found"].all()
    assert (records.drop(index=blank)["warnings"] == "").all()
    assert len(pd.read_csv(run / "oof_predictions.csv")) == 8


def test_table_rows_map_to_the_documented_model_options(cohort: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import vbiopsy.train.diagnosis_run as run_module

    seen: list[tuple[dict, Path | None, Path | None]] = []
    fold_metrics = {"fold_mean": dict.fromkeys(run_module.SUMMARY_KEYS, 0.5),
                    "fold_sd": dict.fromkeys(run_module.SUMMARY_KEYS, 0.1), "pooled_oof": {"accuracy": 0.5}}

    def fake_run(config: object, out: Path, *, cache_dir: Path | None = None) -> Path:
        if config.model.backbone == "swin":  # type: ignore[attr-defined]
            raise ConfigError("backbone 'swin' needs the 'einops' package")
        seen.append((config.model.model_dump(), config.data.splits, cache_dir))  # type: ignore[attr-defined]
        return Path(out)

    monkeypatch.setattr(run_module, "run_cross_validation", fake_run)
    monkeypatch.setattr(run_module, "evaluate_diagnosis", lambda run_dir: fold_metrics)
    table = ablation_table(config_for(cohort), tmp_path / "ablation")
    assert table["row"].tolist() == ["none", "coarse", "coarse+MCA", "refined", "refined+MCA"]
    assert [m["prior"] for m, _, _ in seen] == ["none", "coarse", "coarse", "refined", "refined"]
    assert [m["mca"] for m, _, _ in seen] == [False, False, True, False, True]
    assert [m["input_prior"] for m, _, _ in seen] == ["none", "multiply", "none", "multiply", "none"]
    assert seen[0][1] is None and {str(s) for _, s, _ in seen[1:]} == {str(tmp_path / "ablation" / "none" /
                                                                            "splits.json")}  # one split for all rows
    assert {c for _, _, c in seen} == {tmp_path / "ablation" / "samples"}  # and one sample cache
    assert table.loc[0, "accuracy"] == "50.0 ± 10.0" and (tmp_path / "ablation" / "row_table.csv").is_file()
    seen.clear()
    config = config_for(cohort, model={"input_prior": "channel"}, comparison={
        "backbones": ["resnet", "densenet", "swin"], "options": {"resnet": {"width": "tiny", "blocks": [1, 1]}}})
    assert [m["input_prior"] for m, _, _ in seen] == []
    ablation_table(config, tmp_path / "ablation2")
    assert [m["input_prior"] for m, _, _ in seen] == ["none", "channel", "channel", "channel", "channel"]
    seen.clear()
    crop = config_for(cohort, data={"working_shape": [16, 16, 16], "lesion_crop": {"shape": [8, 8, 8]}},
                      model={"lesion_crop": True, "whole_brain_dropout": 0.5, "crop_dropout": 0.25,
                             "lesion_measurements": True})
    ablation_table(crop, tmp_path / "ablation3")  # the no-localisation row has no crop (or measurements) to lean on
    assert [(m["lesion_crop"], m["whole_brain_dropout"], m["crop_dropout"], m["lesion_measurements"])
            for m, _, _ in seen] == [(False, 0.0, 0.0, False)] + [(True, 0.5, 0.25, True)] * 4
    seen.clear()
    backbones = backbone_table(config, tmp_path / "backbones")
    assert backbones["backbone"].tolist() == ["resnet", "densenet", "swin"]
    assert backbones["error"].isna().tolist() == [True, True, False] and "einops" in backbones.loc[2, "error"]
    assert [m["backbone_options"] for m, _, _ in seen] == [{"width": "tiny", "blocks": [1, 1]}, {"width": "tiny"}]
    assert all(m["mca"] and m["prior"] == "refined" for m, _, _ in seen)


def test_gradcam_overlays_and_single_case_diagnosis(first_run: Path, cohort: Path) -> None:
    summary = json.loads(gradcam_overlays(first_run).read_text())
    assert len(summary["patients"]) == 2 and (first_run / "gradcam" / "gradcam.png").is_file()
    assert all(p["true"] in DIAGNOSES and "peak_in_tumour" in p for p in summary["patients"])
    test_ids = json.loads((first_run / "splits.json").read_text())["test"]
    row = read_cohort(cohort).row(test_ids[0])
    case = diagnose_case(row["t1c"], first_run, images={"flair": row["flair"]})
    probabilities, cam, localisation = case.probabilities, case.gradcam, case.localisation
    assert list(probabilities) == list(DIAGNOSES) and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    test = pd.read_csv(first_run / "test_predictions.csv").set_index("subject_id").loc[row["subject_id"]]
    np.testing.assert_allclose(list(probabilities.values()), test.to_numpy(dtype=float), atol=1e-5)
    assert cam.shape == localisation.brain_mask.shape == (32, 36, 32) and 0 <= cam.min() and cam.max() == 1


def test_cli_trains_evaluates_predicts_and_runs_the_ablation_for_a_diagnosis_config(cohort: Path, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from vbiopsy.cli import app

    config = tmp_path / "diag.yaml"
    tiny = {**TINY, "task": "diagnosis", "data": {**TINY["data"], "cohort": str(cohort)},
            "optim": {**TINY["optim"], "max_epochs": 1}}
    config.write_text(yaml.safe_dump(tiny))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pooled_oof"]["n"] == 8 and "test" in metrics and (run / "gradcam" / "gradcam.png").is_file()
    test_ids = json.loads((run / "splits.json").read_text())["test"]
    result = CliRunner().invoke(app, ["predict", str(run), *test_ids[:2], "--out", str(tmp_path / "pred"), "--report"])
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv", dtype={"subject_id": str}).set_index("subject_id")
    test = pd.read_csv(run / "test_predictions.csv", dtype={"subject_id": str}).set_index("subject_id")
    columns = [f"p_{d}" for d in DIAGNOSES]
    np.testing.assert_allclose(pred.loc[test_ids[:2], columns], test.loc[test_ids[:2], columns], atol=1e-5)
    assert all(Path(p).is_file() for p in [*pred["gradcam"], *pred["prior"]])
    folds = [pred[[f"p_{d}_fold{k}" for d in DIAGNOSES]].to_numpy() for k in range(2)]
    np.testing.assert_allclose(np.mean(folds, axis=0), pred[columns].to_numpy(), atol=2e-6)  # the mean of 2 folds
    html = (tmp_path / "pred" / f"{test_ids[0]}_report.html").read_text()
    assert "research" in html.lower() and f"{test_ids[0]}_prior.nii.gz" in html
    result = CliRunner().invoke(app, ["predict", str(run), "nobody", "--out", str(tmp_path / "pred2")])
    assert result.exit_code != 0 and "nobody" in result.output and not (tmp_path / "pred2").exists()
    result = CliRunner().invoke(app, ["ablation", str(config), "--out", str(tmp_path / "abl"), "--backbones"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "abl" / "backbone_table.csv")
    assert table["backbone"].tolist() == list(load_diagnosis_config(config).comparison.backbones)
