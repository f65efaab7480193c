"""Ground truth of a phantom cohort: per-patient truth and latent factors, and per-task oracles.

The **oracle** of a task is what a model could at best extract from the planted phenotype: a
logistic regression on the latent factors of :data:`ORACLE_FEATURES` (standardised), scored
out-of-fold with stratified k-fold cross-validation (k = 5, fewer if a class is rarer), so no
patient is scored by a model that saw it. Per patient it gives P(positive) (binary tasks) or class
probabilities (``grade``, ``diagnosis``); per cohort the AUC (macro one-vs-rest for multi-class),
accuracy, balanced accuracy and the majority-class accuracy for reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vbiopsy.data.phantoms.clinical import ClinicalVariables, survival_12m
from vbiopsy.data.phantoms.phenotype import TumourPhenotype
from vbiopsy.data.schema import DIAGNOSES

ORACLE_FEATURES: tuple[str, ...] = (
    "enhancement", "necrosis_fraction", "oedema_extent", "cbf_tumour_ratio", "cbf_peri_ratio", "mismatch",
    "heterogeneity", "n_calcifications", "t2_solid", "radius_mm", "midline_distance_mm", "anterior_mm",
    "superior_mm", "ventricle_distance_mm",
)
"""Planted phenotype the oracle sees: factor values plus the centre's distance from the midline
(|x|), its MNI y (anterior) and z (superior) in mm."""
MAX_FOLDS = 5


@dataclass(frozen=True)
class TaskSpec:
    """A prediction task: how to read its label from the truth and the classes it has."""

    name: str
    description: str
    classes: tuple[Any, ...]
    label: Callable[[ClinicalVariables], Any]


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("grade", "WHO CNS grade 2/3/4 (gliomas)", (2, 3, 4), lambda c: c.grade),
    TaskSpec("survival_12m",
             "death within 365 days (1) vs OS ≥ 365 days (0); alive with < 365 days follow-up excluded",
             (0, 1), lambda c: survival_12m(c.os_days, c.os_event)),
    TaskSpec("idh", "IDH mutant (1) vs wild-type (0), gliomas", (0, 1), lambda c: c.idh),
    TaskSpec("codel_1p19q", "1p/19q co-deleted (1) vs intact (0), gliomas with a known status", (0, 1),
             lambda c: c.codel_1p19q),
    TaskSpec("tert", "TERT promoter mutant (1) vs wild-type (0), gliomas", (0, 1), lambda c: c.tert),
    TaskSpec("diagnosis", "tumour type", DIAGNOSES, lambda c: c.diagnosis),
)}


@dataclass(frozen=True)
class PatientRecord:
    """What the cohort writer keeps of one patient for the tables and the ground truth."""

    subject_id: str
    table_id: str
    index: int
    clinical: ClinicalVariables
    phenotype: TumourPhenotype
    volumes_ml: dict[str, float]
    geometry: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def phenotype_features(pheno: TumourPhenotype) -> list[float]:
    """The :data:`ORACLE_FEATURES` of one tumour, in order."""
    x, y, z = pheno.centre_mm
    derived = {"midline_distance_mm": abs(x), "anterior_mm": y, "superior_mm": z}
    return [float(derived[name]) if name in derived else float(getattr(pheno, name)) for name in ORACLE_FEATURES]


def _metrics(codes: np.ndarray, proba: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Cohort metrics from class codes (index into ``classes``) and probabilities (n, k)."""
    predicted = np.argmax(proba, axis=1)
    counts = {str(c): int(np.sum(codes == k)) for k, c in enumerate(classes)}
    if len(classes) == 2:
        auc = roc_auc_score(codes, proba[:, 1])
    else:
        auc = roc_auc_score(codes, proba, multi_class="ovr", average="macro", labels=list(range(len(classes))))
    return {
        "auc": round(float(auc), 4),
        "accuracy": round(float(np.mean(predicted == codes)), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(codes, predicted)), 4),
        "majority_accuracy": round(max(counts.values()) / len(codes), 4),
        "n": int(len(codes)),
        "class_counts": counts,
    }


def cross_validated_oracle(features: np.ndarray, labels: Sequence[Any], classes: Sequence[Any],
                           seed: int) -> tuple[np.ndarray | None, list[Any], dict[str, Any]]:
    """Out-of-fold class probabilities of a standardised logistic regression, the classes they
    refer to (those with ≥ 2 patients) and the metrics.

    Probabilities are (n, k) in the order of the returned classes, NaN rows for patients of a
    class left out; ``None`` (and the metrics say why) when fewer than two classes have two patients.
    """
    y = np.array(labels, dtype=object)
    kept = [c for c in classes if np.sum(y == c) >= 2]
    dropped = [str(c) for c in classes if 0 < np.sum(y == c) < 2]
    if len(kept) < 2:
        return None, kept, {"auc": None, "accuracy": None, "n": int(len(y)),
                            "reason": "fewer than two classes with at least two patients"}
    use = np.isin(y, np.array(kept, dtype=object))
    x, y = features[use], y[use]
    n_folds = min(MAX_FOLDS, min(int(np.sum(y == c)) for c in kept))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    proba = np.zeros((len(y), len(kept)))
    codes = np.array([kept.index(v) for v in y])
    for train, test in folds.split(x, codes):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[train], codes[train])
        fold_proba = np.zeros((len(test), len(kept)))
        fold_proba[:, model.classes_] = model.predict_proba(x[test])
        proba[test] = fold_proba
    metrics = _metrics(codes, proba, kept)
    metrics["folds"] = n_folds
    if dropped:
        metrics["excluded_classes"] = dropped
    full = np.full((len(use), len(kept)), np.nan)
    full[use] = proba
    return full, kept, metrics


def task_oracle(task: TaskSpec, records: Sequence[PatientRecord], seed: int) -> dict[str, Any]:
    """Labels, per-patient oracle outputs and cohort metrics of one task."""
    labelled = [(r, task.label(r.clinical)) for r in records]
    labelled = [(r, v) for r, v in labelled if v is not None]
    out: dict[str, Any] = {"description": task.description, "classes": list(task.classes),
                           "labels": {r.subject_id: v for r, v in labelled}}
    if not labelled:
        out.update({"oracle": {}, "metrics": {"auc": None, "accuracy": None, "n": 0, "reason": "no labelled patients"}})
        return out
    features = np.array([phenotype_features(r.phenotype) for r, _ in labelled])
    proba, kept, metrics = cross_validated_oracle(features, [v for _, v in labelled], task.classes, seed)
    oracle: dict[str, Any] = {}
    if proba is not None:
        for (record, _), row in zip(labelled, proba):
            if np.isnan(row).any():
                continue
            if len(task.classes) == 2:
                oracle[record.subject_id] = round(float(row[kept.index(1)]), 5)
            else:
                oracle[record.subject_id] = {str(c): round(float(p), 5) for c, p in zip(kept, row)}
    out.update({"oracle": oracle, "metrics": metrics})
    return out


def ground_truth(header: dict[str, Any], records: Sequence[PatientRecord], seed: int) -> dict[str, Any]:
    """The ``ground_truth.json`` document: ``header`` (generator, config…), patients and tasks."""
    patients = {
        r.subject_id: {
            "index": r.index, "table_id": r.table_id, "files": r.files,
            "clinical": r.clinical.canonical(), "diagnosis_text": r.clinical.diagnosis_text,
            "source_row": r.clinical.source_row,
            "survival_12m": survival_12m(r.clinical.os_days, r.clinical.os_event),
            "latent": {**r.phenotype.as_dict(), "volumes_ml": r.volumes_ml}, "geometry": r.geometry,
        }
        for r in records
    }
    tasks = {name: task_oracle(spec, records, seed) for name, spec in TASKS.items()}
    return {**header, "oracle_features": list(ORACLE_FEATURES), "patients": patients, "tasks": tasks}
