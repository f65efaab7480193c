"""Clinical-only baseline: logistic regression or Cox model on age, sex and EOR, on the imaging model's folds.

An imaging model earns its place only by beating a model of the clinical variables alone, fitted
on the same patients, label and folds (on the real UCSF-PDGM table a logistic model on age, sex
and EOR already reaches AUC ≈ 0.785 for 12-month mortality). Per fold, the encoding/imputation
(:class:`TabularEncoding`) is fitted on that fold's training patients only, the features are
standardised with the same statistics, and the model predicts the fold's validation patients
(out-of-fold). The test patients are predicted by a model refitted on every training patient;
their labels are never needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic, write_with_atomic
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.labels import TABLE, subject_ids_of
from vbiopsy.train.tabular import TABULAR_FEATURES, TabularEncoding, encode_column

KINDS: tuple[str, ...] = ("logistic", "cox")


@dataclass
class BaselineResult:
    """Predictions and fitted parameters of the clinical-only baseline.

    Attributes:
        kind: ``logistic`` or ``cox``.
        features: clinical columns actually used (those present in the training table).
        columns: names of the output columns (``p_event``; ``p_class_k``; ``risk``; or the caller's).
        train_ids / test_ids: patients in the order of ``oof`` / ``test``.
        oof: out-of-fold outputs: ``(n,)`` P(class 1) (binary), ``(n, K)`` probabilities, or
            ``(n,)`` log partial hazard (cox, higher = worse).
        oof_fold: ``(n,)`` index of the fold that predicted each training patient.
        test: the same outputs for the test patients, from the model refitted on all training patients.
        score_name / oof_score: ``auc`` (macro one-vs-rest for K > 2) or ``c_index`` on the OOF outputs.
        coefficients: refitted model's coefficients per feature, on the standardised scale
            (logistic: one per class row; cox: log hazard ratio per std).
        encoding: the refitted :class:`TabularEncoding` (``to_dict``).
        fold_encodings: each fold's encoding, fitted on that fold's training patients only.
    """

    kind: str
    features: tuple[str, ...]
    columns: tuple[str, ...]
    train_ids: list[str]
    test_ids: list[str]
    oof: np.ndarray
    oof_fold: np.ndarray
    test: np.ndarray
    score_name: str
    oof_score: float
    coefficients: dict[str, list[float]]
    encoding: dict[str, Any]
    fold_encodings: list[dict[str, Any]] = field(default_factory=list)

    def _frame(self, ids: list[str], values: np.ndarray) -> pd.DataFrame:
        matrix = values.reshape(len(ids), -1)
        frame = pd.DataFrame(matrix, columns=list(self.columns))
        frame.insert(0, "subject_id", ids)
        return frame

    def oof_frame(self) -> pd.DataFrame:
        """One row per training patient: ``subject_id, fold, <columns>``."""
        frame = self._frame(self.train_ids, self.oof)
        frame.insert(1, "fold", self.oof_fold)
        return frame

    def test_frame(self) -> pd.DataFrame:
        """One row per test patient: ``subject_id, <columns>``."""
        return self._frame(self.test_ids, self.test)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no per-patient values)."""
        return {"kind": self.kind, "features": list(self.features), "columns": list(self.columns),
                "n_train": len(self.train_ids), "n_test": len(self.test_ids), "n_folds": len(self.fold_encodings),
                f"oof_{self.score_name}": None if math.isnan(self.oof_score) else round(self.oof_score, 6),
                "coefficients": self.coefficients, "encoding": self.encoding}

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write ``oof_predictions.csv``, ``test_predictions.csv`` and ``baseline.json`` (atomically)
        into ``folder``; return the summary."""
        folder = ensure_writable_dir(folder)
        for name, frame in (("oof_predictions.csv", self.oof_frame()), ("test_predictions.csv", self.test_frame())):
            write_with_atomic(folder / name, lambda tmp, f=frame: f.to_csv(tmp, index=False, float_format="%.8g"))
        summary = self.summary()
        write_text_atomic(folder / "baseline.json", json.dumps(summary, indent=1) + "\n")
        return summary


def present_features(frame: pd.DataFrame, features: Sequence[str]) -> tuple[str, ...]:
    """The ``features`` that ``frame`` has as a column with at least one non-missing value."""
    used = []
    for feature in features:
        if feature in frame.columns and np.isfinite(encode_column(frame, feature)).any():
            used.append(feature)
    return tuple(used)


def _check_folds(folds: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Integer index pairs; validation sets must partition ``range(n)`` (each patient predicted once)."""
    if len(folds) < 2:
        raise ConfigError(f"the baseline needs at least 2 folds, got {len(folds)}")
    checked = []
    seen = np.zeros(n, dtype=np.int64)
    for k, pair in enumerate(folds):
        if len(pair) != 2:
            raise ConfigError(f"fold {k} must be a (train_indices, val_indices) pair")
        train, val = (np.asarray(part).reshape(-1) for part in pair)
        for name, part in (("train", train), ("val", val)):
            if part.size and (not np.issubdtype(part.dtype, np.integer) or part.min() < 0 or part.max() >= n):
                raise ConfigError(f"fold {k}: {name} indices must be integers in [0, {n})")
        if not train.size or not val.size:
            raise ConfigError(f"fold {k}: empty train or validation set")
        if np.intersect1d(train, val).size:
            raise ConfigError(f"fold {k}: patient index {np.intersect1d(train, val)[0]} is in train and validation")
        seen[val] += 1
        checked.append((train.astype(np.int64), val.astype(np.int64)))
    if np.any(seen != 1):
        bad = int(np.flatnonzero(seen != 1)[0])
        raise ConfigError(f"validation folds must cover each patient exactly once; patient index {bad} "
                          f"is in {int(seen[bad])} validation sets")
    return checked


def _check_targets(y: np.ndarray, kind: str, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if kind == "cox":
        valid = y.shape == (n, 2) and np.all(np.isfinite(y)) and np.all(y[:, 0] >= 0) \
            and np.all(np.isin(y[:, 1], (0, 1)))
        if not valid:
            raise InputError("y_train", f"cox targets must be ({n}, 2) [time ≥ 0, event 0/1], got shape {y.shape}")
        return y
    if y.shape != (n,) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or np.any(y < 0):
        raise InputError("y_train", f"logistic targets must be ({n},) class indices, got shape {y.shape}")
    if np.unique(y).size < 2:
        raise InputError("y_train", f"the training patients have a single class ({int(y[0])}): nothing to fit")
    return y.astype(np.int64)


class _Model:
    """One fitted baseline: encoding + standardisation + logistic or Cox model."""

    def __init__(self, kind: str, features: tuple[str, ...], n_classes: int, C: float, penalizer: float) -> None:
        self.kind, self.features, self.n_classes, self.C, self.penalizer = kind, features, n_classes, C, penalizer

    def fit(self, frame: pd.DataFrame, y: np.ndarray, where: str) -> _Model:
        self.encoding = TabularEncoding.fit(frame, self.features)
        x = self.encoding.normalise(self.encoding.transform(frame))
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression

            if np.unique(y).size < 2:
                raise InputError(where, "the training patients have a single class: cannot fit the baseline")
            self.model = LogisticRegression(C=self.C, max_iter=1000).fit(x, y)
        else:
            from lifelines import CoxPHFitter

            if y[:, 1].sum() == 0:
                raise InputError(where, "the training patients have no events: cannot fit the Cox baseline")
            table = pd.DataFrame(x, columns=list(self.features)).assign(time=y[:, 0], event=y[:, 1])
            self.model = CoxPHFitter(penalizer=self.penalizer).fit(table, duration_col="time", event_col="event")
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n,)`` P(class 1) or log partial hazard, or ``(n, K)`` probabilities (absent classes 0)."""
        x = self.encoding.normalise(self.encoding.transform(frame))
        if self.kind == "cox":
            if not len(x):
                return np.zeros(0)
            table = pd.DataFrame(x, columns=list(self.features))
            return np.asarray(self.model.predict_log_partial_hazard(table), dtype=np.float64).reshape(-1)
        prob = np.zeros((len(x), self.n_classes))
        if len(x):
            prob[:, self.model.classes_.astype(int)] = self.model.predict_proba(x)
        return prob[:, 1] if self.n_classes == 2 else prob

    def coefficients(self) -> dict[str, list[float]]:
        if self.kind == "cox":
            return {f: [float(self.model.params_[f])] for f in self.features}
        coef = np.atleast_2d(self.model.coef_)
        return {f: [float(v) for v in coef[:, i]] for i, f in enumerate(self.features)}


def _score(kind: str, y: np.ndarray, out: np.ndarray) -> tuple[str, float]:
    if kind == "cox":
        from lifelines.utils import concordance_index

        if y[:, 1].sum() == 0:
            return "c_index", math.nan
        return "c_index", float(concordance_index(y[:, 0], -out, y[:, 1]))
    from sklearn.metrics import roc_auc_score

    if out.ndim == 1:
        return "auc", float(roc_auc_score(y, out))
    present = np.unique(y)
    if present.size != out.shape[1]:
        return "auc", math.nan
    return "auc", float(roc_auc_score(y, out, multi_class="ovr", average="macro"))


def _default_columns(kind: str, n_classes: int) -> tuple[str, ...]:
    if kind == "cox":
        return ("risk",)
    return ("p_event",) if n_classes == 2 else tuple(f"p_class_{k}" for k in range(n_classes))


def clinical_baseline(frame_train: pd.DataFrame, y_train: np.ndarray, frame_test: pd.DataFrame | None, *,
                      folds: Sequence[tuple[np.ndarray, np.ndarray]], kind: Literal["logistic", "cox"] = "logistic",
                      features: Sequence[str] = TABULAR_FEATURES, columns: Sequence[str] | None = None,
                      C: float = 1.0, penalizer: float = 0.01) -> BaselineResult:
    """Fit the clinical-only baseline on the imaging model's folds.

    Args:
        frame_train: training-pool rows (``subject_id`` and clinical columns), in the order that
            ``y_train`` and the fold indices refer to.
        y_train: ``(n,)`` class indices (logistic; K = max + 1, multinomial when K > 2) or
            ``(n, 2)`` ``[time, event]`` (cox).
        frame_test: test rows to predict (``None`` or empty: none); their labels are not used.
        folds: ``(train_indices, val_indices)`` per fold, positions in ``frame_train``; the
            validation sets must partition the training pool (as the imaging model's CV).
        kind: ``logistic`` (scikit-learn, L2 with ``C``) or ``cox`` (lifelines ``CoxPHFitter``
            with a small ridge ``penalizer``, which keeps it stable when a fold has few events).
        features: candidate clinical columns; those absent or empty in ``frame_train`` are skipped.
        columns: output column names (default ``p_event`` / ``p_class_k`` / ``risk``); pass the
            imaging model's names so the two prediction tables line up.
        C, penalizer: regularisation of the logistic / Cox model.

    Returns:
        :class:`BaselineResult` with OOF and test predictions and the columns actually used.
    """
    if kind not in KINDS:
        raise ConfigError(f"baseline kind {kind!r} is unknown (expected one of {', '.join(KINDS)})")
    for name, value in (("C", C), ("penalizer", penalizer)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (name == "C" and value == 0):
            raise ConfigError(f"{name} must be a finite number {'> 0' if name == 'C' else '≥ 0'}, got {value!r}")
    train_ids = subject_ids_of(frame_train)
    has_test = frame_test is not None and len(frame_test) > 0
    test_ids = subject_ids_of(frame_test) if has_test else []
    y = _check_targets(y_train, kind, len(train_ids))
    checked = _check_folds(folds, len(train_ids))
    used = present_features(frame_train, tuple(features))
    if not used:
        raise InputError(TABLE, f"none of the clinical columns {', '.join(features)} has values in the "
                                f"training patients: no clinical baseline")
    n_classes = 1 if kind == "cox" else int(y.max()) + 1
    names = tuple(columns) if columns is not None else _default_columns(kind, n_classes)
    width = n_classes if kind == "logistic" and n_classes > 2 else 1
    if len(names) != width:
        raise ConfigError(f"columns must name {width} output(s), got {list(names)}")
    oof = np.full((len(train_ids), width), np.nan)
    oof_fold = np.full(len(train_ids), -1, dtype=np.int64)
    fold_encodings = []
    for k, (train, val) in enumerate(checked):
        model = _Model(kind, used, n_classes, C, penalizer).fit(frame_train.iloc[train], y[train], f"fold {k}")
        oof[val] = model.predict(frame_train.iloc[val]).reshape(len(val), width)
        oof_fold[val] = k
        fold_encodings.append(model.encoding.to_dict())
    final = _Model(kind, used, n_classes, C, penalizer).fit(frame_train, y, "training pool")
    test = final.predict(frame_test).reshape(-1, width) if has_test else np.zeros((0, width))
    oof_out = oof[:, 0] if width == 1 else oof
    score_name, score = _score(kind, y, oof_out)
    return BaselineResult(kind, used, names, train_ids, test_ids, oof_out, oof_fold,
                          test[:, 0] if width == 1 else test, score_name, score, final.coefficients(),
                          final.encoding.to_dict(), fold_encodings)
