"""Adaptive-Diagnoser runs: stratified k-fold patient-level CV, evaluation, Table-2 ablation, Table-3 backbones.

Protocol (Virtual Biopsy §5): the patients are split once into ``folds`` stratified, patient-level
folds (plus an optional held-out test set); fold k trains on the other folds and predicts its own
patients (out-of-fold, OOF). Inside the training folds a stratified ``early_stopping_fraction``
of patients chooses the best epoch, so a fold's test patients never influence their own model. Only
the training pool's labels are read before :func:`evaluate_diagnosis`; held-out test labels are read
there and nowhere else. Results: per-fold metrics averaged ± sample sd (ddof 1), pooled-OOF metrics
with the per-class confusion matrix, the test set (fold ensemble) when there is one.

Table-2 rows (:data:`ABLATION_ROWS`), as the paper's Table 2 (VLM-C → coarse prior, Refine → refined prior):

============  =======  ===============================================================  =====
row           prior    input prior                                                      MCA
============  =======  ===============================================================  =====
none          —        none: the whole brain, no localisation (paper row ①)             off
coarse        coarse   ``model.input_prior``, or ``multiply`` when that is ``none``     off
coarse+MCA    coarse   ``model.input_prior`` (the configured model's)                   on
refined       refined  as row "coarse"                                                  off
refined+MCA   refined  ``model.input_prior``: the configured full model (row ⑤)         on
============  =======  ===============================================================  =====

Rows without MCA need the prior at the input to use it at all ("Loc. only": the prior removes the
background, image × prior); the MCA rows are the paper's Fig. 4 model (whole brain in, prior only in
the attention) unless the config adds the prior at the input too. Every other setting (backbone,
optimiser, augmentation, split, seed) is the config's, identical across rows.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, write_text_atomic, write_with_atomic
from vbiopsy.config import save_config
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.data.splits import make_splits
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.diagnose import DiagnosisTask, ensemble_probabilities, predict_probabilities, validation_score
from vbiopsy.train.checkpoint import load_checkpoint, save_checkpoint
from vbiopsy.train.diagnosis_config import DiagnosisConfig, load_diagnosis_config, tabular_width, with_changes
from vbiopsy.train.diagnosis_data import (DiagnosisCohort, diagnosis_labels, manifest_rows, measurement_settings,
                                          prepare_diagnosis_cohort)

COLUMNS: list[str] = [f"p_{d}" for d in DIAGNOSES]
ABLATION_ROWS: dict[str, tuple[str, bool]] = {"none": ("none", False), "coarse": ("coarse", False),
                                              "coarse+MCA": ("coarse", True), "refined": ("refined", False),
                                              "refined+MCA": ("refined", True)}
"""Table-2 row → (prior, MCA); the input prior is given in the module docstring."""
SUMMARY_KEYS = ("precision_macro", "recall_macro", "f1_macro", "accuracy", "balanced_accuracy", "auc")


def build_model(config: DiagnosisConfig) -> torch.nn.Module:
    """The configured Adaptive-Diagnoser (untrained)."""
    from vbiopsy.models.diagnoser import AdaptiveDiagnoser

    m = config.model
    options = dict(m.backbone_options)
    if m.backbone == "vit":  # its position embedding fixes the input size: default to the working grid
        options.setdefault("img_size", list(config.data.working_shape))
    if m.backbone == "efficient3d":  # MONAI's static "same" padding is computed for this size
        options.setdefault("image_size", max(config.data.working_shape))
    crop = config.data.lesion_crop
    return AdaptiveDiagnoser(m.backbone, in_channels=1, n_classes=len(DIAGNOSES), mca=m.mca,
                             input_prior=m.input_prior, reduction=m.reduction, dropout=m.dropout,
                             backbone_options=options or None, geometry=m.geometry,
                             clinical_features=tabular_width(m),
                             crop_channels=len(crop.modalities) if m.lesion_crop and crop else 0,
                             crop_width=m.crop_width, whole_brain_dropout=m.whole_brain_dropout,
                             crop_dropout=m.crop_dropout)


def set_clinical_statistics(model: torch.nn.Module, cohort: DiagnosisCohort, fit_ids: Sequence[str],
                            config: DiagnosisConfig) -> None:
    """Give the model the imputation values and standardisation of its tabular inputs — the clinical variables,
    then the lesion measurements — fitted on the fold's training patients only (nothing to do without any). A
    variable constant in those patients (std at the floor) is scaled by 1, not by the floor: a test patient who
    differs must not reach the head as a value of order 1e7. A measurement is imputed with its mean."""
    from vbiopsy.train.tabular import STD_FLOOR, TabularEncoding

    features = config.model.clinical
    fill: list[float] = []
    mean: list[float] = []
    std: list[float] = []
    if features:
        encoding = TabularEncoding.fit(manifest_rows(cohort.manifest, fit_ids), features)
        fill, mean, std = [encoding.fill[f] for f in features], list(encoding.mean), list(encoding.std)
    settings = measurement_settings(config)
    if settings is not None:
        measured = np.stack([cohort.samples[s].measurements(config.model.prior, settings) for s in fit_ids])
        with warnings.catch_warnings():  # a measurement missing in every training patient: fill 0, scale 1
            warnings.simplefilter("ignore", RuntimeWarning)
            centre, spread = np.nanmean(measured, axis=0), np.nanstd(measured, axis=0)
        centre = np.nan_to_num(centre)
        fill, mean, std = fill + list(centre), mean + list(centre), std + list(np.nan_to_num(spread))
    if not fill:
        return
    scale = np.where(np.asarray(std) > STD_FLOOR, std, 1.0)
    model.set_clinical_statistics(fill, mean, scale)  # type: ignore[operator]


def early_stopping_split(config: DiagnosisConfig, cohort: DiagnosisCohort, train_ids: list[str],
                         fold: int) -> tuple[list[str], list[str]]:
    """(patients to fit, patients that pick the epoch): a stratified patient-level share of ``train_ids``;
    with ``early_stopping_fraction`` 0 every training patient is in both (best epoch on training data)."""
    fraction = config.data.early_stopping_fraction
    if fraction == 0:
        return list(train_ids), list(train_ids)
    patient_of = dict(zip(cohort.manifest.subjects, cohort.manifest.patient_ids()))
    try:
        inner = make_splits(train_ids, [DIAGNOSES[int(v)] for v in cohort.targets(train_ids)],
                            patient_ids=[patient_of[s] for s in train_ids], test_fraction=fraction, n_folds=2,
                            seed=config.data.split_seed + 1 + fold, rare_classes="train", stratify_name="diagnosis")
    except ConfigError as err:
        raise ConfigError(f"data.early_stopping_fraction={fraction}: fold {fold}'s {len(train_ids)} training "
                          f"patients give no stratified early-stopping set ({err}); set it to 0") from None
    stop = set(inner.test)
    return [s for s in train_ids if s not in stop], sorted(stop)


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    return write_with_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def _predictions(model: torch.nn.Module, cohort: DiagnosisCohort, ids: list[str], config: DiagnosisConfig) -> pd.DataFrame:
    prob = predict_probabilities(model, cohort.dataset(ids, config))
    frame = pd.DataFrame(prob, columns=COLUMNS)
    frame.insert(0, "subject_id", ids)
    return frame


def run_fold(config: DiagnosisConfig, cohort: DiagnosisCohort, fold_index: int, run_dir: Path, *,
             resume: bool = True) -> dict[str, Any]:
    """Train fold ``fold_index``; write its weights, history, OOF (and test) predictions; return a summary.

    With ``resume`` (:mod:`vbiopsy.train.resume`), a fold already finished under this config is not
    retrained (its stored summary is returned) and an interrupted one continues from its last epoch
    state; without, both are redone.
    """
    from vbiopsy.tasks.losses import class_weights
    from vbiopsy.train.fit import fit, seed_everything
    from vbiopsy.train.resume import FoldProgress

    n_folds = len(cohort.splits.folds)
    if isinstance(fold_index, bool) or not isinstance(fold_index, int) or not 0 <= fold_index < n_folds:
        raise ConfigError(f"fold_index must be in 0..{len(cohort.splits.folds) - 1}, got {fold_index!r}")
    fold = cohort.splits.folds[fold_index]
    folder = ensure_writable_dir(run_dir / f"fold_{fold_index}")
    progress = FoldProgress.start(config, folder, fold_index, resume=resume)
    if progress.finished is not None:
        return progress.finished
    fit_ids, stop_ids = early_stopping_split(config, cohort, list(fold.train), fold_index)
    y_fit = cohort.targets(fit_ids)
    weight = class_weights(y_fit.astype(int), len(DIAGNOSES)) if config.optim.class_weights else None
    seed = config.optim.seed * 1000 + fold_index
    seed_everything(seed, deterministic=config.optim.deterministic)
    module = DiagnosisTask(build_model(config), optim=config.optim, class_weight=weight)
    set_clinical_statistics(module.model, cohort, fit_ids, config)
    train_set = cohort.dataset(fit_ids, config, labelled=True, augment=True, seed=seed)
    stop_set = cohort.dataset(stop_ids, config, labelled=True)
    started = time.perf_counter()
    result = fit(module, train_set, stop_set, config.optim, seed=seed, checkpoints=progress.checkpoints)
    seconds = time.perf_counter() - started
    metadata = {"task": "diagnosis", "fold": fold_index, "classes": list(DIAGNOSES),
                "model": config.model.model_dump(mode="json"), "data": _data_metadata(config), "vbiopsy": __version__}
    save_checkpoint(folder / "model.safetensors", module.model.state_dict(), metadata)
    oof = _predictions(module.model, cohort, list(fold.val), config)
    oof.insert(1, "fold", fold_index)
    _csv(oof, folder / "oof_predictions.csv")
    if cohort.test_ids:
        _csv(_predictions(module.model, cohort, list(cohort.test_ids), config), folder / "test_predictions.csv")
    _csv(pd.DataFrame(result.history), folder / "history.csv")
    summary = {"fold": fold_index, "n_fit": len(fit_ids), "n_stop": len(stop_ids), "n_oof": len(fold.val),
               "seconds": round(seconds, 2), "best_epoch": result.best_epoch, "best_score": result.best_score,
               "epochs": result.epochs, "precision": result.precision, "resumed_from": result.resumed_from}
    write_text_atomic(folder / "fit.json", json.dumps(summary, indent=1) + "\n")
    files = ["model.safetensors", "oof_predictions.csv", *(["test_predictions.csv"] if cohort.test_ids else []),
             "history.csv", "fit.json"]
    progress.done(files, summary)
    return summary


def _data_metadata(config: DiagnosisConfig) -> dict[str, Any]:
    d = config.data
    return {"modality": d.modality, "working_shape": list(d.working_shape), "margin_mm": d.margin_mm,
            "localizer": d.localizer.model_dump(mode="json")}


def patient_records(cohort: DiagnosisCohort) -> pd.DataFrame:
    """One row per patient: localiser outcome and the warnings recorded while preparing its input."""
    rows = []
    for sid in sorted(cohort.samples):
        record = cohort.samples[sid].record
        rows.append({"subject_id": sid, "found": record.get("found"), "proposer": record.get("proposer"),
                     "warnings": "; ".join(record.get("warnings", []))})
    return pd.DataFrame(rows)


def run_cross_validation(config: DiagnosisConfig, out: str | Path, *, cache_dir: Path | None = None,
                         progress: Any = None, resume: bool = True) -> Path:
    """Prepare the cohort, train every fold, write OOF/test predictions and per-patient records.

    ``resume``: continue what a killed run of the same config left in ``out`` (see :func:`run_fold`);
    the caller checks the folder first (:func:`vbiopsy.train.resume.check_run_folder`).
    """
    run_dir = ensure_writable_dir(out)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    cohort = prepare_diagnosis_cohort(config, run_dir, cache_dir=cache_dir)
    _csv(patient_records(cohort), run_dir / "patients.csv")
    folds = []
    for k in range(len(cohort.splits.folds)):
        folds.append(run_fold(config, cohort, k, run_dir, resume=resume))
        if progress is not None:
            progress(k + 1, len(cohort.splits.folds))
    oof = pd.concat([pd.read_csv(run_dir / f"fold_{k}" / "oof_predictions.csv", dtype={"subject_id": str})
                     for k in range(len(folds))], ignore_index=True)
    oof["target"] = cohort.targets(list(oof["subject_id"]))
    _csv(oof, run_dir / "oof_predictions.csv")
    if cohort.test_ids:
        per_fold = [pd.read_csv(run_dir / f"fold_{k}" / "test_predictions.csv", dtype={"subject_id": str})
                    for k in range(len(folds))]
        test = pd.DataFrame(ensemble_probabilities([f[COLUMNS].to_numpy() for f in per_fold]), columns=COLUMNS)
        test.insert(0, "subject_id", list(cohort.test_ids))
        _csv(test, run_dir / "test_predictions.csv")
    info = {"vbiopsy": __version__, "task": "diagnosis", "n_train_pool": len(oof), "n_test": len(cohort.test_ids),
            "samples_dir": str((cache_dir or run_dir / "samples").absolute()),
            "excluded": cohort.train_labels.excluded, "folds": folds,
            "seconds": round(time.perf_counter() - started, 1)}
    write_text_atomic(run_dir / "run.json", json.dumps(info, indent=1, default=str) + "\n")
    return run_dir


def score_predictions(y: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro/weighted P/R/F1, per-class and confusion matrix (counts and
    row-normalised), and the macro one-vs-rest AUC over the classes present."""
    from vbiopsy.evaluate.classification import classification_metrics

    metrics = classification_metrics(y, prob, labels=list(DIAGNOSES))
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    metrics["confusion_normalised"] = np.round(np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0),
                                               4).tolist()
    metrics["auc"] = validation_score(y, prob, "auc")
    return metrics


def evaluate_diagnosis(run_dir: str | Path) -> dict[str, Any]:
    """Write ``metrics.json``: per-fold metrics, their mean ± sd, pooled OOF and (if any) the test set.

    This is the only place that reads held-out test labels; it never trains.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise InputError(run_dir, "not a finished diagnosis run (no run.json)")
    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"subject_id": str})
    per_fold = [score_predictions(part["target"].to_numpy(), part[COLUMNS].to_numpy())
                for _, part in oof.groupby("fold", sort=True)]
    table = pd.DataFrame([{k: m[k] for k in SUMMARY_KEYS} for m in per_fold])
    metrics: dict[str, Any] = {
        "folds": [{k: m[k] for k in (*SUMMARY_KEYS, "n")} for m in per_fold],
        "fold_mean": table.mean().round(4).to_dict(), "fold_sd": table.std(ddof=1).round(4).to_dict(),
        "pooled_oof": score_predictions(oof["target"].to_numpy(), oof[COLUMNS].to_numpy())}
    test_path = run_dir / "test_predictions.csv"
    if test_path.is_file():
        config = load_diagnosis_config(run_dir / "config.yaml")
        from vbiopsy.data.layouts import read_cohort

        test = pd.read_csv(test_path, dtype={"subject_id": str})
        frame = read_cohort(config.data.cohort, layout=config.data.layout, clinical=config.data.clinical).frame
        labels = diagnosis_labels(frame[frame["subject_id"].isin(set(test["subject_id"]))])
        test = test.set_index("subject_id").loc[labels.subject_ids]
        metrics["test"] = score_predictions(labels.y, test[COLUMNS].to_numpy())
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics


def summary_row(metrics: dict[str, Any]) -> dict[str, str]:
    """``mean ± sd`` over folds of every summary metric (per cent, as the paper's tables)."""
    mean, sd = metrics["fold_mean"], metrics["fold_sd"]
    return {k: f"{100 * mean[k]:.1f} ± {100 * (0 if np.isnan(sd[k]) else sd[k]):.1f}" for k in SUMMARY_KEYS}


def check_runs_at_working_shape(config: DiagnosisConfig) -> None:
    """Build the configured model and run a batch of two zero volumes on the working grid through it, so a
    backbone that cannot take that size fails here with a :class:`ConfigError` naming it, not mid-training."""
    from vbiopsy.train.export_targets import diagnosis_inputs

    model = build_model(config)
    named = diagnosis_inputs(config, model, 2, 0)
    try:
        with torch.no_grad():
            model.train()(**named)
    except (RuntimeError, ValueError, InputError) as err:
        raise ConfigError(f"backbone {config.model.backbone!r} cannot run on the working grid "
                          f"{list(config.data.working_shape)}: {str(err).splitlines()[0]}") from None


def _variant_table(config: DiagnosisConfig, out: Path, variants: dict[str, dict[str, Any]], label: str,
                   cache_dir: Path | None) -> pd.DataFrame:
    """Cross-validate each variant (model-section changes) on the same split and sample cache; one row each."""
    root = ensure_writable_dir(out)
    rows, splits = [], config.data.splits
    for name, changes in variants.items():
        row = {label: name, **{k: v for k, v in changes.items() if k != "backbone_options"}}
        try:
            variant = with_changes(config, model=changes, data={"splits": splits})
            check_runs_at_working_shape(variant)
            run_dir = run_cross_validation(variant, root / name.replace("+", "_"), cache_dir=cache_dir or root / "samples")
        except ConfigError as err:  # e.g. a backbone whose optional package is missing: reported, not fatal
            rows.append({**row, "error": str(err)})
            continue
        splits = splits or run_dir / "splits.json"
        metrics = evaluate_diagnosis(run_dir)
        pooled = round(100 * metrics["pooled_oof"]["accuracy"], 1)
        rows.append({**row, **summary_row(metrics), "pooled_accuracy": pooled})
    table = pd.DataFrame(rows)
    _csv(table, root / f"{label}_table.csv")
    print(table.to_string(index=False))
    return table


def ablation_table(config: DiagnosisConfig, out: str | Path, *, cache_dir: Path | None = None) -> pd.DataFrame:
    """Table 2 on the user's cohort (rows: :data:`ABLATION_ROWS`); written to ``out`` and printed.
    Samples are cached in ``cache_dir`` (default ``out/samples``), shared by the rows."""
    loc_input = config.model.input_prior if config.model.input_prior != "none" else "multiply"
    variants = {}
    for name, (prior, mca) in ABLATION_ROWS.items():
        input_prior = "none" if prior == "none" else (config.model.input_prior if mca else loc_input)
        variants[name] = {"prior": prior, "mca": mca, "input_prior": input_prior,
                          "geometry": config.model.geometry and prior != "none",
                          "lesion_crop": config.model.lesion_crop and prior != "none",
                          "lesion_measurements": config.model.lesion_measurements and prior != "none",
                          "whole_brain_dropout": config.model.whole_brain_dropout if prior != "none" else 0.0,
                          "crop_dropout": config.model.crop_dropout if prior != "none" else 0.0}
    return _variant_table(config, Path(out), variants, "row", cache_dir)


def backbone_table(config: DiagnosisConfig, out: str | Path, *, cache_dir: Path | None = None) -> pd.DataFrame:
    """Table 3: the configured model with each backbone of ``comparison.backbones``; written and printed."""
    options = config.comparison.options
    variants = {name: {"backbone": name, "backbone_options": options.get(name, config.model.backbone_options
                                                                            if name == config.model.backbone else {})}
                for name in config.comparison.backbones}
    return _variant_table(config, Path(out), variants, "backbone", cache_dir)


def load_fold_models(run_dir: str | Path) -> tuple[DiagnosisConfig, list[torch.nn.Module]]:
    """The run's config and its fold models (safetensors, no pickle), in fold order, eval mode."""
    run_dir = Path(run_dir)
    config = load_diagnosis_config(run_dir / "config.yaml")
    paths = sorted(run_dir.glob("fold_*/model.safetensors"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        raise InputError(run_dir, "no fold_*/model.safetensors: not a trained diagnosis run")
    models = []
    for path in paths:
        state, _ = load_checkpoint(path, expect={"task": "diagnosis", "model": config.model.model_dump(mode="json")})
        model = build_model(config)
        model.load_state_dict(state)
        models.append(model.eval())
    return config, models


def clinical_inputs(config: DiagnosisConfig, subject_ids: Sequence[str], cohort: Path | None = None) -> np.ndarray | None:
    """(n, k) clinical inputs of ``subject_ids`` read from ``cohort`` (default: the run's); None without any."""
    if not config.model.clinical:
        return None
    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.train.diagnosis_data import clinical_matrix

    d = config.data
    manifest = read_cohort(cohort or d.cohort, layout=d.layout, clinical=d.clinical)
    return clinical_matrix(manifest, subject_ids, config.model.clinical)


def train_diagnoser(config: DiagnosisConfig, out: str | Path, *, evaluate: bool = True) -> Path:
    """What ``vbiopsy train`` does for ``task: diagnosis``: cross-validate with a progress bar, evaluate, Grad-CAM;
    print paths (the shared :func:`vbiopsy.train.run.train`; ``vbiopsy train --resume`` continues a killed run)."""
    from vbiopsy.train.run import train

    return train(config, Path(out), evaluate=evaluate)
