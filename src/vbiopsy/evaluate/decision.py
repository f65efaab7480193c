"""Decision-curve analysis: net benefit of acting on a model's risk vs treating all or none.

At threshold probability p_t a patient is treated when ``p >= p_t``;
``NB = TP/N − FP/N · p_t/(1 − p_t)`` (Vickers & Elkin 2006, the ASLNet reference code and
``dcurves.dca``). Treat-all: ``prevalence − (1 − prevalence)·p_t/(1 − p_t)``; treat-none: 0. A
model is useful at p_t when its net benefit exceeds both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vbiopsy.errors import ConfigError
from vbiopsy.evaluate.inputs import binary_problem

DEFAULT_THRESHOLDS = np.arange(1, 100) / 100.0  # 0.01, 0.02, …, 0.99 (99 points, as the reference code)


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit (per patient, unitless) at each threshold: all arrays (T,)."""

    thresholds: np.ndarray
    model: np.ndarray
    treat_all: np.ndarray
    treat_none: np.ndarray
    prevalence: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (arrays as lists), the columns of the reference CSV."""
        return {"thresholds": self.thresholds.tolist(), "model": self.model.tolist(),
                "treat_all": self.treat_all.tolist(), "treat_none": self.treat_none.tolist(),
                "prevalence": self.prevalence, "n": self.n}


def _check_thresholds(thresholds: ArrayLike | None) -> np.ndarray:
    if thresholds is None:
        return DEFAULT_THRESHOLDS.copy()
    values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all() or (values <= 0).any() \
            or (values >= 1).any():
        raise ConfigError(f"thresholds must be values strictly between 0 and 1, got {thresholds!r}")
    return values


def net_benefit(y: ArrayLike, prob: ArrayLike, thresholds: ArrayLike | None = None) -> DecisionCurve:
    """Net benefit of the model (positive if ``p >= p_t``), of treat-all and of treat-none.

    ``y`` ∈ {0, 1} (1 = the event that treatment targets), ``prob`` = P(event) as (n,) or (n, 2).
    For a K-class model pass the column of the class of interest and a 0/1 ``y``.
    """
    points = _check_thresholds(thresholds)
    labels, risk = binary_problem(y, prob, "net benefit")
    n = labels.size
    positives = np.sort(risk[labels == 1])
    negatives = np.sort(risk[labels == 0])
    true_pos = positives.size - np.searchsorted(positives, points, side="left")
    false_pos = negatives.size - np.searchsorted(negatives, points, side="left")
    odds = points / (1.0 - points)
    prevalence = positives.size / n
    return DecisionCurve(thresholds=points, model=true_pos / n - false_pos / n * odds,
                         treat_all=prevalence - (1.0 - prevalence) * odds, treat_none=np.zeros(points.size),
                         prevalence=float(prevalence), n=int(n))
