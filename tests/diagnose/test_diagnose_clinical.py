"""A diagnoser run whose head also reads the prior's geometry, the patient's age and sex, a lesion crop
(T1c + FLAIR) and the lesion measurements on it: clinical and measurement statistics fitted on the training
patients only, carried by the checkpoint, the same probabilities at predict time (crops cut again from the
scans, measured again), Grad-CAM with every input, and a patient without an age still diagnosed (imputed,
with a warning)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.errors import InputError
from vbiopsy.localize.lesion_measurements import MEASUREMENTS, lesion_measurements
from vbiopsy.report.patient_hooks import diagnosis_reports
from vbiopsy.train.checkpoint import load_checkpoint
from vbiopsy.train.diagnosis_config import load_diagnosis_config
from vbiopsy.train.diagnosis_crop import crop_window
from vbiopsy.train.diagnosis_data import measurement_settings, prepare_diagnosis_cohort
from vbiopsy.train.diagnosis_gradcam import gradcam_overlays
from vbiopsy.train.diagnosis_predict import case_clinical, predict_diagnosis
from vbiopsy.train.diagnosis_run import run_cross_validation
from vbiopsy.train.tabular import STD_FLOOR


pytestmark = pytest.mark.slow
COLUMNS = [f"p_{d}" for d in DIAGNOSES]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clinical")
    generate_cohort(PhantomConfig(n_patients=12, shape=(32, 36, 32), seed=20,
                                  diagnosis_mix={d: 0.25 for d in DIAGNOSES}), root / "cohort")
    config = load_diagnosis_config(None, {
        "data": {"cohort": str(root / "cohort"), "folds": 2, "test_fraction": 0.25, "working_shape": [16, 16, 16],
                 "early_stopping_fraction": 0.0,
                 "localizer": {"require_lesion": False, "refine": {"steps": 20}},
                 "lesion_crop": {"shape": [8, 8, 8], "spacing_mm": 2.0, "jitter_voxels": 2}},
        "model": {"backbone_options": {"width": "tiny"}, "geometry": True, "clinical": ["age", "sex"],
                  "lesion_crop": True, "crop_width": 4, "lesion_measurements": True},
        "optim": {"max_epochs": 2, "precision": "32", "lr": 1e-3, "seed": 0}, "explain": {"max_patients": 2}})
    return run_cross_validation(config, root / "run")


def test_clinical_statistics_come_from_the_fold_training_patients(run: Path) -> None:
    splits = json.loads((run / "splits.json").read_text())
    frame = read_cohort(run.parent / "cohort").frame.set_index("subject_id")
    config = load_diagnosis_config(run / "config.yaml")
    cohort = prepare_diagnosis_cohort(config, run, cache_dir=run / "samples")
    for k, fold in enumerate(splits["folds"]):
        state, meta = load_checkpoint(run / f"fold_{k}" / "model.safetensors")
        ages = frame.loc[fold["train"], "age"].astype(float).to_numpy()
        sex = (frame.loc[fold["train"], "sex"] == "F").astype(float).to_numpy()
        assert state["clinical_mean"].numel() == 2 + len(MEASUREMENTS)  # age, sex, then the measurements
        np.testing.assert_allclose(state["clinical_mean"][:2].numpy(), [ages.mean(), sex.mean()], rtol=1e-6)
        expected_std = [s if s > 0 else 1.0 for s in (ages.std(), sex.std())]  # a constant column is scaled by 1
        np.testing.assert_allclose(state["clinical_std"][:2].numpy(), expected_std, rtol=1e-5)
        measured = np.stack([lesion_measurements(dict(zip(("t1c", "flair"), crop_window(cohort.samples[s].crops[
            "refined"], 2))), 2.0) for s in fold["train"]])
        with warnings.catch_warnings():  # a measurement NaN in every training patient: fill 0, scale 1
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nan_to_num(np.nanmean(measured, 0)), np.nan_to_num(np.nanstd(measured, 0))
        np.testing.assert_allclose(state["clinical_mean"][2:].numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["clinical_fill"][2:].numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["clinical_std"][2:].numpy(), np.where(std > STD_FLOOR, std, 1.0), rtol=1e-4)
        assert meta["model"]["lesion_measurements"] is True
        assert meta["model"]["clinical"] == ["age", "sex"] and meta["model"]["geometry"] is True
        assert meta["model"]["lesion_crop"] is True and any(k.startswith("crop_encoder.") for k in state)


def test_predict_reproduces_the_test_predictions_and_imputes_a_missing_age(run: Path, tmp_path: Path) -> None:
    config = load_diagnosis_config(run / "config.yaml")
    test_ids = json.loads((run / "splits.json").read_text())["test"][:2]
    out = predict_diagnosis(config, run, test_ids, tmp_path / "pred", saliency=False)
    pred = pd.read_csv(out, dtype={"subject_id": str}).set_index("subject_id")
    test = pd.read_csv(run / "test_predictions.csv", dtype={"subject_id": str}).set_index("subject_id")
    np.testing.assert_allclose(pred.loc[test_ids, COLUMNS], test.loc[test_ids, COLUMNS], atol=1e-5)
    assert pred["warnings"].isna().all()
    cohort = prepare_diagnosis_cohort(config, run, cache_dir=run / "samples")  # measured again from the scans
    stored = cohort.samples[test_ids[0]].measurements("refined", measurement_settings(config))
    np.testing.assert_allclose(pred.loc[test_ids[0], [f"lesion_{m}" for m in MEASUREMENTS]].to_numpy(float), stored,
                               atol=1e-4)
    reports = diagnosis_reports(config, run, out, None)
    page = reports[0].read_text()
    assert "Lesion measurements read by the model" in page and " ml" in page

    manifest = read_cohort(run.parent / "cohort")
    manifest.frame.loc[manifest.frame["subject_id"] == test_ids[0], "age"] = None
    edited = manifest.to_csv(tmp_path / "no_age.csv")
    out = predict_diagnosis(config, run, test_ids[:1], tmp_path / "pred2", cohort=edited, saliency=False)
    row = pd.read_csv(out, dtype={"subject_id": str}).iloc[0]
    assert "age missing" in row["warnings"]
    assert not np.allclose(row[COLUMNS].to_numpy(dtype=float), test.loc[test_ids[0], COLUMNS].to_numpy(dtype=float))


def test_gradcam_runs_with_clinical_inputs_and_the_crop(run: Path) -> None:
    summary = json.loads(gradcam_overlays(run).read_text())
    assert len(summary["patients"]) == 2
    for p in summary["patients"]:  # evidence split between the branches, or a map with no evidence at all
        assert (0.0 <= p["crop_share"] <= 1.0 and "empty_map" not in p) if "crop_share" in p else \
            (p["empty_map"] is True and "peak_in_tumour" not in p and "mass_in_tumour" not in p)
    assert any("crop_share" in p for p in summary["patients"])


def test_case_clinical_checks_the_count_and_names_missing_values() -> None:
    warnings: list[str] = []
    values = case_clinical(["age", "sex"], [float("nan"), 1.0], warnings)
    assert np.isnan(values[0]) and values[1] == 1.0 and warnings == ["age missing; imputed with the training "
                                                                     "patients' value"]
    assert case_clinical([], None, warnings) is None
    with pytest.raises(InputError, match="expected 2 values"):
        case_clinical(["age", "sex"], [50.0], [])
