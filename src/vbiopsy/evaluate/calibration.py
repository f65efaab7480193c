"""Calibration: Brier score, reliability (calibration) curve and expected calibration error (ECE).

Brier score — binary (probabilities (n,) or (n, 2)): mean of (P(class 1) − y)², range [0, 1]
(= ``sklearn.metrics.brier_score_loss``). K ≥ 3 classes: Brier's original multi-class score,
the mean over patients of Σ_k (p_k − 1[y = k])², range [0, 2] (= scikit-learn's multi-class
``brier_score_loss``). Lower is better.

Calibration curve: predictions are binned, and per bin the mean prediction is set against the
observed fraction of positives. Bins are those of ``sklearn.calibration.calibration_curve``
(uniform: ``linspace(0, 1, n_bins + 1)``; quantile: percentiles of the predictions; a value on an
inner edge goes to the lower bin) and, as there, empty bins are left out. ECE = Σ_bins
(count/n)·|observed − mean predicted|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from vbiopsy.errors import ConfigError
from vbiopsy.evaluate.inputs import labels_and_probabilities


@dataclass(frozen=True)
class CalibrationCurve:
    """Reliability curve over the non-empty bins (arrays (B,)) and its ECE (probability units).

    ``target`` says what was binned: ``"P(class 1)"`` (binary), ``"P(class k) one-vs-rest"`` or
    ``"top-label confidence"`` (multi-class: max probability vs whether the argmax is right).
    ``bin_edges`` (n_bins + 1,) are the edges used, before empty bins were dropped.
    """

    mean_predicted: np.ndarray
    observed_fraction: np.ndarray
    count: np.ndarray
    bin_edges: np.ndarray
    ece: float
    n: int
    strategy: str
    target: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (arrays as lists)."""
        return {"mean_predicted": self.mean_predicted.tolist(),
                "observed_fraction": self.observed_fraction.tolist(), "count": self.count.tolist(),
                "bin_edges": self.bin_edges.tolist(), "ece": self.ece, "n": self.n, "strategy": self.strategy,
                "target": self.target}


def brier_score(y: ArrayLike, prob: ArrayLike) -> float:
    """Brier score (lower is better; see the module docstring).

    Binary (n,) or (n, 2): mean (p₁ − y)². (n, K ≥ 3): mean over patients of Σ_k (p_k − 1[y=k])².
    """
    labels, probabilities, k = labels_and_probabilities(y, prob)
    if probabilities.ndim == 1 or k == 2:
        positive = probabilities if probabilities.ndim == 1 else probabilities[:, 1]
        return float(np.mean((positive - labels) ** 2))
    one_hot = np.eye(k)[labels]
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)))


def _binned_target(labels: np.ndarray, probabilities: np.ndarray, k: int,
                   class_index: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(predicted probability, outcome 0/1, name) of the quantity whose calibration is measured."""
    if class_index is not None:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) \
                or not 0 <= class_index < k:
            raise ConfigError(f"class_index must be an integer in 0..{k - 1}, got {class_index!r}")
    if probabilities.ndim == 1:
        if class_index == 0:
            return 1.0 - probabilities, (labels == 0).astype(np.float64), "P(class 0)"
        return probabilities, (labels == 1).astype(np.float64), "P(class 1)"
    if class_index is None and k == 2:
        class_index = 1
    if class_index is not None:
        name = "P(class 1)" if k == 2 and class_index == 1 else f"P(class {class_index}) one-vs-rest"
        return probabilities[:, class_index], (labels == class_index).astype(np.float64), name
    top = np.argmax(probabilities, axis=1)
    return probabilities.max(axis=1), (top == labels).astype(np.float64), "top-label confidence"


def calibration_curve(y: ArrayLike, prob: ArrayLike, *, n_bins: int = 10,
                      strategy: Literal["uniform", "quantile"] = "uniform",
                      class_index: int | None = None) -> CalibrationCurve:
    """Reliability curve and ECE of P(class 1) (binary), of P(class ``class_index``), or (K ≥ 3 and
    no ``class_index``) of the top-label confidence."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if strategy not in ("uniform", "quantile"):
        raise ConfigError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    labels, probabilities, k = labels_and_probabilities(y, prob)
    predicted, outcome, target = _binned_target(labels, probabilities, k, class_index)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.percentile(predicted, np.linspace(0.0, 1.0, n_bins + 1) * 100)
    bins = np.searchsorted(edges[1:-1], predicted)
    count = np.bincount(bins, minlength=n_bins)
    sum_predicted = np.bincount(bins, weights=predicted, minlength=n_bins)
    sum_observed = np.bincount(bins, weights=outcome, minlength=n_bins)
    used = count > 0
    mean_predicted = sum_predicted[used] / count[used]
    observed = sum_observed[used] / count[used]
    ece = float(np.sum(count[used] / labels.size * np.abs(observed - mean_predicted)))
    return CalibrationCurve(mean_predicted=mean_predicted, observed_fraction=observed, count=count[used],
                            bin_edges=edges, ece=ece, n=int(labels.size), strategy=strategy, target=target)
