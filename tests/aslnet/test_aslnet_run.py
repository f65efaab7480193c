"""ASLNet runs end to end on a tiny phantom cohort: outputs, determinism, learning, no test-label reads.

A glioma-only phantom cohort at 4 mm is written once; each test trains a tiny network for a few
epochs through the real command (``vbiopsy train``) on a manifest CSV built from it, so labels can
be edited (poisoned) per test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

TINY = {
    "model": {"base_width": 4, "blocks": [1, 1], "gn_groups": 4, "dropout": 0.0},
    "optim": {"max_epochs": 3, "batch_size": 8, "lr": 3e-3, "early_stopping_patience": 3, "precision": "32",
              "seed": 0},
    "augment": {"rotate_prob": 0.5, "elastic_prob": 0.5},
    "explain": {"ig_steps": 4, "max_patients": 2},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 36-glioma phantom cohort (4 mm) and its ground truth."""
    root = tmp_path_factory.mktemp("aslnet") / "cohort"
    generate_cohort(PhantomConfig(n_patients=36, spacing_mm=4.0, diagnosis_mix={"glioma": 1.0}, seed=3), root)
    return root, json.loads((root / "ground_truth.json").read_text())


def manifest_csv(cohort: Path, path: Path, edit: dict[str, dict[str, object]] | None = None) -> Path:
    """The cohort as a manifest CSV, with ``edit[subject][column] = value`` applied."""
    manifest = read_cohort(cohort)
    frame = manifest.frame
    for subject, values in (edit or {}).items():
        for column, value in values.items():
            frame.loc[frame["subject_id"] == subject, column] = value
    manifest.to_csv(path)
    return path


def write_config(path: Path, task: str, cohort: Path, **data: object) -> Path:
    config = {"task": task, "data": {"cohort": str(cohort), "folds": 3, "test_fraction": 0.25,
                                     "roi": {"centre": "seg"}, **data}, **TINY}
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output


def test_grade_run_writes_one_prediction_per_patient_and_is_deterministic(cohort: tuple[Path, dict],
                                                                          tmp_path: Path) -> None:
    csv = manifest_csv(cohort[0], tmp_path / "manifest.csv")
    config = write_config(tmp_path / "grade.yaml", "grade", csv, rare_classes="train")
    train(config, tmp_path / "run1")
    train(config, tmp_path / "run2")
    run = tmp_path / "run1"
    splits = json.loads((run / "splits.json").read_text())
    oof = pd.read_csv(run / "oof_predictions.csv")
    pool = sorted(s for fold in splits["folds"] for s in fold["val"])
    assert sorted(oof["subject_id"]) == pool  # one row per training-pool patient, never per augmented copy
    assert np.allclose(oof[["grade_2", "grade_3", "grade_4"]].sum(axis=1), 1.0, atol=1e-5)
    test = pd.read_csv(run / "test_predictions.csv")
    assert sorted(test["subject_id"]) == sorted(splits["test"]) and "target" not in test.columns
    for name in ("oof_predictions.csv", "test_predictions.csv", "posthoc.json", "baseline/oof_predictions.csv"):
        assert (run / name).read_bytes() == (tmp_path / "run2" / name).read_bytes(), name
    state, meta = load_checkpoint(run / "fold_0" / "model.safetensors")
    assert meta["task"] == "grade" and meta["model"]["base_width"] == 4 and state
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == len(splits["test"])
    # the rare-class policy kept grade III in training: the report says the AUC is over the others
    assert "grade_3 absent" in metrics["test"]["auc"]["average"]
    assert {"macro", "weighted"} <= {k.rsplit("_", 1)[-1] for k in metrics["test"]["at_tuned_rule"]}
    posthoc = json.loads((run / "posthoc.json").read_text())
    assert posthoc["temperature"] > 0 and metrics["test"]["calibrated"]["temperature"] == posthoc["temperature"]
    # vbiopsy predict reproduces the run's test predictions from the saved safetensors fold models
    chosen = list(test["subject_id"][:2])
    result = CliRunner().invoke(app, ["predict", str(run), *chosen, "--out", str(tmp_path / "pred"), "--saliency"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "pred" / "predictions.csv").set_index("subject_id")
    expected = test.set_index("subject_id").loc[chosen]
    np.testing.assert_allclose(predicted[expected.columns].to_numpy(), expected.to_numpy(), atol=2e-6)
    calibrated = predicted[[f"calibrated_{c}" for c in expected.columns]].to_numpy()
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-6)  # temperature-scaled, still a distribution
    assert predicted["decision"].str.startswith("grade ").all()
    assert all(Path(p).is_file() for p in predicted["saliency"])
    saliency = sorted((run / "explain").glob("*_saliency.nii.gz"))
    assert len(saliency) == 2
    summary = json.loads((run / "explain" / "summary.json").read_text())
    assert set(summary["mean_share"]) == {"raw", "zg", "zl", "log"}


def test_test_labels_are_not_read_before_the_final_evaluation(cohort: tuple[Path, dict], tmp_path: Path) -> None:
    clean = manifest_csv(cohort[0], tmp_path / "clean.csv")
    train(write_config(tmp_path / "clean.yaml", "survival", clean), tmp_path / "clean")
    test_ids = json.loads((tmp_path / "clean" / "splits.json").read_text())["test"]
    # poison every test patient's outcome (flip dead-early <-> long survivor), same split
    frame = read_cohort(clean).frame.set_index("subject_id")
    poison = {s: ({"os_days": 900.0, "os_event": 0} if frame.loc[s, "os_days"] < 365 else
                  {"os_days": 100.0, "os_event": 1}) for s in test_ids}
    poisoned = manifest_csv(cohort[0], tmp_path / "poisoned.csv", poison)
    config = write_config(tmp_path / "poisoned.yaml", "survival", poisoned,
                          splits=str(tmp_path / "clean" / "splits.json"))
    train(config, tmp_path / "poisoned", "--no-evaluate")
    for name in ("oof_predictions.csv", "test_predictions.csv", "posthoc.json", "baseline/test_predictions.csv"):
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "poisoned" / name).read_bytes(), name
    assert not (tmp_path / "poisoned" / "metrics.json").exists()
    # evaluation is the step that reads them, and it does not touch training outputs
    weights = tmp_path / "poisoned" / "fold_0" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "poisoned")])
    assert result.exit_code == 0, result.output
    first = (tmp_path / "poisoned" / "metrics.json").read_text()
    assert CliRunner().invoke(app, ["evaluate", str(tmp_path / "poisoned")]).exit_code == 0
    assert (tmp_path / "poisoned" / "metrics.json").read_text() == first
    assert weights.stat().st_mtime_ns == before
    clean_auc = json.loads((tmp_path / "clean" / "metrics.json").read_text())["test"]["auc"]["auc"]
    poisoned_auc = json.loads(first)["test"]["auc"]["auc"]
    assert poisoned_auc == pytest.approx(1.0 - clean_auc)  # every test label flipped


def test_bad_inputs_give_one_clear_error_line(cohort: tuple[Path, dict], tmp_path: Path) -> None:
    csv = manifest_csv(cohort[0], tmp_path / "manifest.csv")
    bad = write_config(tmp_path / "bad.yaml", "grade", csv)
    text = yaml.safe_load(bad.read_text())
    cases = {
        "optim: unkown_key": ({**text, "optim": {**text["optim"], "learning_rate": 0.1}}, "optim.learning_rate"),
        "out of range": ({**text, "optim": {**text["optim"], "lr": -1}}, "optim.lr"),
        "film stage": ({**text, "task": "survival", "model": {**text["model"], "film_stages": [5]}}, "film_stages"),
    }
    for name, (data, key) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_').replace(':', '')}.yaml"
        path.write_text(yaml.safe_dump(data))
        result = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "never")])
        assert result.exit_code == 2, (name, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and key in errors[0], (name, result.output)
        assert "Traceback" not in result.output
    # a cohort without the task's label column
    no_grade = manifest_csv(cohort[0], tmp_path / "nograde.csv")
    frame = pd.read_csv(no_grade).drop(columns=["grade"])
    frame.to_csv(no_grade, index=False)
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path / "ng.yaml", "grade", no_grade)),
                                      "--out", str(tmp_path / "ng")])
    assert result.exit_code == 2 and "grade" in result.output and "Traceback" not in result.output
    # grade III has too few patients for 3 folds + a test set without the rare-class policy
    result = CliRunner().invoke(app, ["train", str(bad), "--out", str(tmp_path / "rare")])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output, result.output


def test_missing_clinical_values_are_imputed_from_training_folds(cohort: tuple[Path, dict], tmp_path: Path) -> None:
    frame = read_cohort(cohort[0]).frame
    edit = {s: {"age": np.nan, "eor": None} for s in list(frame["subject_id"])[:6]}
    csv = manifest_csv(cohort[0], tmp_path / "nan.csv", edit)
    train(write_config(tmp_path / "s.yaml", "survival", csv), tmp_path / "run", "--no-evaluate")
    _, meta = load_checkpoint(tmp_path / "run" / "fold_0" / "model.safetensors")
    fill = meta["tabular"]["fill"]
    assert np.isfinite(fill["age"]) and fill["eor"] in (0.0, 1.0, 2.0)
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "test_predictions.csv")["p_event"]).all()


def test_tuning_scores_trials_on_oof_only_and_writes_a_usable_best_config(cohort: tuple[Path, dict],
                                                                          tmp_path: Path) -> None:
    csv = manifest_csv(cohort[0], tmp_path / "manifest.csv")
    config = write_config(tmp_path / "survival.yaml", "survival", csv)
    data = yaml.safe_load(config.read_text())
    data["optim"]["max_epochs"] = 1
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["tune", str(config), "--out", str(tmp_path / "study"), "--trials", "2",
                                      "--space", "small", "--storage", f"sqlite:///{tmp_path / 'study.db'}"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "study" / "tune.json").read_text())
    assert summary["n_trials"] == 2 and 0.0 <= summary["best_oof_score"] <= 1.0
    trials = sorted((tmp_path / "study").glob("trial_*"))
    assert len(trials) == 2 and not any((t / "metrics.json").exists() for t in trials)
    splits = {(t / "splits.json").read_text() for t in trials}
    assert len(splits) == 1  # every trial used the same split
    from vbiopsy.train.run import load_train_config

    best = load_train_config(tmp_path / "study" / "best_config.yaml")
    assert best.model.base_width == summary["best_params"]["base_width"]


def test_learns_a_planted_perfusion_signal_and_its_saliency_sits_on_the_tumour(cohort: tuple[Path, dict],
                                                                               tmp_path: Path) -> None:
    """Outcome planted from the tumour's ASL hyper-perfusion (above vs below the cohort median):
    visible in the ASL cube, unrelated to age/sex/EOR. The model must learn it well above chance and
    beat the clinical-only baseline; IG of correctly called positives must sit on the tumour."""
    root, truth = cohort
    ratio = {s: p["latent"]["cbf_tumour_ratio"] for s, p in truth["patients"].items()}
    median = float(np.median(list(ratio.values())))
    edit = {s: ({"os_days": 100.0, "os_event": 1} if r > median else {"os_days": 900.0, "os_event": 0})
            for s, r in ratio.items()}
    csv = manifest_csv(root, tmp_path / "planted.csv", edit)
    config = write_config(tmp_path / "planted.yaml", "survival", csv)
    data = yaml.safe_load(config.read_text())
    data["optim"].update(max_epochs=40, early_stopping_patience=12)
    data["explain"].update(ig_steps=8, max_patients=9)
    config.write_text(yaml.safe_dump(data))
    train(config, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["oof"]["auc"]["auc"] >= 0.7, metrics["oof"]["auc"]  # 27 OOF patients; chance 0.5
    assert metrics["test"]["auc"]["auc"] > metrics["baseline_test"]["auc"]["auc"]
    shap = pd.read_csv(tmp_path / "run" / "explain" / "shapley.csv")
    hits = shap[(shap["target"] == 1) & shap["subject_id"].map(lambda s: ratio[s] > median)]
    assert len(hits) >= 3
    assert hits["tumour_mass_fraction"].median() >= 0.6, hits


def test_bf16_autocast_trains_where_supported(cohort: tuple[Path, dict], tmp_path: Path) -> None:
    from vbiopsy.train.fit import bf16_supported, resolve_precision

    assert resolve_precision("32") == "32-true" and resolve_precision("bf16-mixed") == "bf16-mixed"
    assert resolve_precision("auto") == ("bf16-mixed" if bf16_supported() else "32-true")
    if not bf16_supported():
        pytest.skip("this CPU has no fast bf16 (AVX-512 BF16 / AMX)")
    csv = manifest_csv(cohort[0], tmp_path / "manifest.csv")
    config = write_config(tmp_path / "bf16.yaml", "survival", csv)
    data = yaml.safe_load(config.read_text())
    data["optim"]["precision"] = "bf16-mixed"
    config.write_text(yaml.safe_dump(data))
    train(config, tmp_path / "run", "--no-evaluate")
    assert json.loads((tmp_path / "run" / "fold_0" / "fit.json").read_text())["precision"] == "bf16-mixed"
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "oof_predictions.csv")["p_event"]).all()


def test_a_test_set_with_one_class_reports_the_auc_as_undefined_instead_of_failing() -> None:
    from vbiopsy.train.evaluation import binary_or_multiclass, summary_markdown
    from vbiopsy.train.run import bundled_config, load_train_config

    config = load_train_config(bundled_config("aslnet-grade-demo.yaml"))
    y = np.array([2, 2, 2, 2])
    prob = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.2, 0.1, 0.7], [0.5, 0.2, 0.3]])
    block = binary_or_multiclass(config, y, prob, {"class_scaling": [1.0, 1.0, 1.0]}, seed=0)
    assert block["auc"]["auc"] is None and "only class [2]" in block["auc"]["undefined"]
    assert block["at_argmax"]["accuracy"] == 0.75  # 3 of 4 argmax to grade IV; the other metrics are still computed
    text = summary_markdown({"task": "grade", "test": block, "note": "n"})
    assert "AUC undefined (only class [2]" in text
