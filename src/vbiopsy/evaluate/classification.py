"""Threshold metrics of a classifier: decision rule, confusion matrix, accuracy, P/R/F1, Youden, McNemar.

Every metric is read off one confusion matrix (rows = true class, columns = predicted class).
Averages are named in the keys: ``*_macro`` is the unweighted mean over the classes present in
``y`` or in the predictions, ``*_weighted`` weights each class by its support in ``y`` — both
exactly as scikit-learn's ``precision_recall_fscore_support(..., zero_division=0)``; a ratio with
a zero denominator counts 0. Balanced accuracy is the mean recall over classes present in ``y``
(scikit-learn's ``balanced_accuracy_score``).

Decision rules (reference ASLNet code): ``argmax`` (ties → lowest class), ``scaled argmax`` of
``prob ⊙ s`` (OOF-tuned per-class factors), and ``p >= t`` for a binary P(class 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.inputs import (
    as_labels, as_probabilities, binary_problem, class_names, labels_and_probabilities, n_classes,
)

DEFAULT_THRESHOLD = 0.5
YOUDEN_GUARD = 1e-8  # the reference code's guard in sensitivity and specificity denominators
EXACT_MCNEMAR_BELOW = 25


def _check_rule(prob: np.ndarray, threshold: float | None, class_scaling: Sequence[float] | None) -> np.ndarray | None:
    """Validate the decision-rule options against ``prob``; return the scaling vector or None."""
    if threshold is not None and class_scaling is not None:
        raise ConfigError("give either threshold (binary) or class_scaling (scaled argmax), not both")
    k = n_classes(prob)
    if threshold is not None:
        if k != 2:
            raise ConfigError(f"threshold needs binary probabilities, got {k} classes; use class_scaling")
        if not isinstance(threshold, (int, float, np.floating)) or not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if class_scaling is None:
        return None
    scaling = np.asarray(class_scaling, dtype=np.float64)
    if scaling.shape != (k,) or not np.isfinite(scaling).all() or (scaling <= 0).any():
        raise ConfigError(f"class_scaling must be {k} finite positive factors (one per class), got {class_scaling!r}")
    return scaling


def _rule_name(prob: np.ndarray, threshold: float | None, scaling: np.ndarray | None) -> str:
    if scaling is not None:
        return f"scaled argmax (s = {[float(s) for s in scaling]})"
    if threshold is not None or prob.ndim == 1:
        return f"p >= {float(DEFAULT_THRESHOLD if threshold is None else threshold):g}"
    return "argmax"


def _predict(prob: np.ndarray, threshold: float | None, scaling: np.ndarray | None) -> np.ndarray:
    if scaling is not None:
        columns = np.column_stack([1.0 - prob, prob]) if prob.ndim == 1 else prob
        return np.argmax(columns * scaling, axis=1)
    if threshold is not None or prob.ndim == 1:
        positive = prob if prob.ndim == 1 else prob[:, 1]
        return (positive >= (DEFAULT_THRESHOLD if threshold is None else threshold)).astype(np.int64)
    return np.argmax(prob, axis=1)


def predict_labels(prob: ArrayLike, *, threshold: float | None = None,
                   class_scaling: Sequence[float] | None = None) -> np.ndarray:
    """Predicted class indices (n,) int64 from probabilities (n,) or (n, K).

    Rule: ``class_scaling`` → argmax(prob ⊙ s); ``threshold`` (binary) → ``p >= t``; neither →
    ``p >= 0.5`` for (n,) and argmax for (n, K).
    """
    probabilities = as_probabilities(prob, None)
    return _predict(probabilities, threshold, _check_rule(probabilities, threshold, class_scaling))


def confusion_matrix(y: ArrayLike, pred: ArrayLike, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ConfigError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    truth, predicted = as_labels(y), as_labels(pred, "pred")
    if truth.size != predicted.size:
        raise InputError("pred", f"has {predicted.size} values but y has {truth.size}")
    for name, values in (("y", truth), ("pred", predicted)):
        if values.max() >= n_classes:
            raise InputError(name, f"labels must be in 0..{n_classes - 1}, got {int(values.max())}")
    flat = np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn ``zero_division=0``)."""
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)


def metrics_from_confusion(matrix: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Summary (accuracy, balanced accuracy, macro / weighted P, R, F1) and per-class arrays (K,) from (K, K) counts.

    The per-class dict holds ``precision``, ``recall``, ``f1``, ``support`` and ``in_macro`` (the
    classes present in ``y`` or predicted, over which the macro means run).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.isfinite(matrix).all() \
            or (matrix < 0).any() or matrix.sum() == 0:
        raise InputError("confusion matrix", f"must be square non-negative counts with a positive total, "
                                             f"got {matrix.tolist()!r}")
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2.0 * tp, support + predicted)
    seen = (support > 0) | (predicted > 0)
    in_y = support > 0
    out = {"accuracy": float(tp.sum() / matrix.sum()), "balanced_accuracy": float(recall[in_y].mean())}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(values[seen].mean())
        out[f"{name}_weighted"] = float((values * support).sum() / support.sum())
    return out, {"precision": precision, "recall": recall, "f1": f1, "support": support, "in_macro": seen}


def classification_metrics(y: ArrayLike, prob: ArrayLike, *, labels: Sequence[str] | None = None,
                           threshold: float | None = None,
                           class_scaling: Sequence[float] | None = None) -> dict[str, Any]:
    """Threshold metrics of one decision rule, as a JSON-ready dict.

    Keys: ``n``, ``n_per_class``, ``decision_rule``, ``accuracy``, ``balanced_accuracy``,
    ``precision_macro|weighted``, ``recall_macro|weighted``, ``f1_macro|weighted``, ``macro_over``
    (the classes the macro means include), ``per_class`` (name → precision, recall, f1, support)
    and ``confusion_matrix`` (rows true, columns predicted, in class order ``labels``).
    Classes absent from ``y`` are allowed (a rare class may miss a test set).
    """
    truth, probabilities, k = labels_and_probabilities(y, prob)
    names = class_names(labels, k)
    scaling = _check_rule(probabilities, threshold, class_scaling)
    matrix = confusion_matrix(truth, _predict(probabilities, threshold, scaling), k)
    summary, arrays = metrics_from_confusion(matrix)
    per_class = {name: {"precision": float(arrays["precision"][i]), "recall": float(arrays["recall"][i]),
                        "f1": float(arrays["f1"][i]), "support": int(arrays["support"][i])}
                 for i, name in enumerate(names)}
    return {"n": int(truth.size), "n_per_class": {name: int(c) for name, c in zip(names, matrix.sum(axis=1))},
            "decision_rule": _rule_name(probabilities, threshold, scaling), **summary,
            "macro_over": [name for name, used in zip(names, arrays["in_macro"]) if used],
            "per_class": per_class, "confusion_matrix": matrix.tolist(), "labels": names}


def youden_threshold(y: ArrayLike, prob: ArrayLike, *, grid: int = 1001) -> tuple[float, float]:
    """Threshold maximising Youden's J = sensitivity + specificity − 1, and that J (reference rule).

    Candidates are ``linspace(0, 1, grid)``; a patient is positive if ``p >= t``; the first
    (lowest) maximum wins. As in the reference code the rates are TP/(P + 1e-8), TN/(N + 1e-8),
    so J is at most 1e-8-relative below the exact value.
    """
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ConfigError(f"grid must be an integer >= 2 (number of thresholds), got {grid!r}")
    truth, positive_prob = binary_problem(y, prob, "Youden's threshold")
    thresholds = np.linspace(0.0, 1.0, grid)
    scores_pos = np.sort(positive_prob[truth == 1])
    scores_neg = np.sort(positive_prob[truth == 0])
    true_pos = scores_pos.size - np.searchsorted(scores_pos, thresholds, side="left")
    true_neg = np.searchsorted(scores_neg, thresholds, side="left")
    j = true_pos / (scores_pos.size + YOUDEN_GUARD) + true_neg / (scores_neg.size + YOUDEN_GUARD) - 1.0
    best = int(np.argmax(j))
    return float(thresholds[best]), float(j[best])


def mcnemar_test(y: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, exact: bool | None = None,
                 correction: bool = True) -> dict[str, Any]:
    """McNemar's test that two classifiers are equally often right on the same patients.

    ``b`` = a right and b wrong, ``c`` = a wrong and b right. Exact: two-sided binomial p =
    min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, ½), statistic min(b, c). Chi-square (1 df):
    ``(|b − c| − 1)² / (b + c)`` with continuity ``correction``, else ``(b − c)² / (b + c)``.
    ``exact=None`` → exact when b + c < 25. With b + c = 0 the classifiers never disagree: p = 1.
    Same conventions as ``statsmodels.stats.contingency_tables.mcnemar``.
    """
    from scipy import stats  # imported here: scipy.stats costs ~0.5 s and only this test needs it

    truth = as_labels(y)
    predictions = []
    for name, values in (("pred_a", pred_a), ("pred_b", pred_b)):
        labels = as_labels(values, name)
        if labels.size != truth.size:
            raise InputError(name, f"has {labels.size} values but y has {truth.size}")
        predictions.append(labels == truth)
    if exact is not None and not isinstance(exact, bool):
        raise ConfigError(f"exact must be True, False or None, got {exact!r}")
    right_a, right_b = predictions
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    discordant = b + c
    use_exact = discordant < EXACT_MCNEMAR_BELOW if exact is None else exact
    if use_exact:
        statistic = float(min(b, c))
        p_value = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), discordant, 0.5)))
        method = "exact binomial"
    elif discordant == 0:
        statistic, p_value, method = 0.0, 1.0, "chi-square (no discordant pairs)"
    else:
        statistic = (abs(b - c) - (1.0 if correction else 0.0)) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
        method = "chi-square with continuity correction" if correction else "chi-square"
    return {"b": b, "c": c, "n": int(truth.size), "statistic": statistic, "p_value": p_value, "method": method}
