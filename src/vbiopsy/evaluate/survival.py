"""Survival statistics: Harrell's C-index (with bootstrap CI), risk groups, Kaplan–Meier and log-rank.

Convention: ``risk`` is a score where HIGHER means SHORTER survival (a Cox linear predictor, a
predicted probability of death). ``time`` is follow-up (any unit, ≥ 0), ``event`` 1 = death
observed, 0 = censored.

The C-index is lifelines' Harrell C: a pair (i, j) is comparable when i died first
(t_i < t_j), or at the same time as j was censored; it is concordant when risk_i > risk_j and
counts ½ on a risk tie. For the bootstrap the comparable (M) and concordant (A) pair matrices are
built once, (n, n); a resample with counts w then has C = wᵀAw / wᵀMw — exactly lifelines'
value on that resample (copies of one patient are tied in time and never comparable) — for all
resamples in two matrix products, O(B·n²). Resamples are stratified by event status.
Kaplan–Meier and log-rank come from lifelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.bootstrap import (
    Difference, iter_stratified_indices, percentile_interval, resample_counts, summarise_difference,
)
from vbiopsy.evaluate.inputs import as_vector, check_bootstrap_options

METHOD = "percentile bootstrap stratified by event status"


@dataclass(frozen=True)
class ConcordanceEstimate:
    """Harrell's C-index with its bootstrap interval."""

    c_index: float
    low: float
    high: float
    n: int
    events: int
    n_resamples: int
    level: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON-ready)."""
        return asdict(self)


def _survival_data(time: ArrayLike, event: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated (time ≥ 0 float64, event ∈ {0, 1} int64) of equal length."""
    times = as_vector(time, "time")
    if (times < 0).any():
        raise InputError("time", f"follow-up must be >= 0, got {times[times < 0][0]!r}")
    events = as_vector(event, "event")
    if events.size != times.size:
        raise InputError("event", f"has {events.size} values but time has {times.size}")
    bad = (events != 0) & (events != 1)
    if bad.any():
        raise InputError("event", f"must be 0 (censored) or 1 (event), got {events[bad][0]!r}")
    return times, events.astype(np.int64)


def _risk(values: ArrayLike, n: int, where: str = "risk") -> np.ndarray:
    risk = as_vector(values, where)
    if risk.size != n:
        raise InputError(where, f"has {risk.size} values but time has {n}")
    return risk


def concordance(time: ArrayLike, event: ArrayLike, risk: ArrayLike) -> float:
    """Harrell's C of ``risk`` (higher = shorter survival); 0.5 = chance, 1 = perfect ranking.

    Equals ``lifelines.utils.concordance_index(time, -risk, event)``.
    """
    from lifelines.utils import concordance_index

    times, events = _survival_data(time, event)
    scores = _risk(risk, times.size)
    try:
        return float(concordance_index(times, -scores, events))
    except ZeroDivisionError:
        raise InputError("event", f"no comparable pair (events: {int(events.sum())} of {events.size}); "
                                  "the C-index needs a death before another patient's follow-up ends") from None


def _comparable_pairs(times: np.ndarray, events: np.ndarray) -> np.ndarray:
    """(n, n) 1.0 where pair (i, j) is comparable with i the earlier death (lifelines' rule)."""
    earlier = times[:, None] < times[None, :]
    tied_with_censored = (times[:, None] == times[None, :]) & (events[None, :] == 0)
    return ((events[:, None] == 1) & (earlier | tied_with_censored)).astype(np.float64)


def _concordant_pairs(comparable: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """(n, n) credit of each comparable pair: 1 if the earlier death has the higher risk, ½ on a tie."""
    credit = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return comparable * credit


def _bootstrap_concordance(times: np.ndarray, events: np.ndarray, risks: list[np.ndarray], n_resamples: int,
                           seed: int) -> np.ndarray:
    """C-index of each risk score on each resample, (M, B)."""
    comparable = _comparable_pairs(times, events)
    concordant = [_concordant_pairs(comparable, r) for r in risks]
    out = np.empty((len(risks), n_resamples))
    start = 0
    for indices in iter_stratified_indices(events, n_resamples, seed):
        counts = resample_counts(indices, times.size)
        stop = start + counts.shape[0]
        pairs = np.einsum("bi,bi->b", counts @ comparable, counts)
        if (pairs == 0).any():
            raise InputError("event", f"a bootstrap resample has no comparable pair ({int(events.sum())} events "
                                      f"of {events.size}); too few events for a bootstrap C-index")
        for m, matrix in enumerate(concordant):
            out[m, start:stop] = np.einsum("bi,bi->b", counts @ matrix, counts) / pairs
        start = stop
    return out


def bootstrap_concordance(time: ArrayLike, event: ArrayLike, risk: ArrayLike, *, n_resamples: int = 2000,
                          seed: int = 0, level: float = 0.95) -> ConcordanceEstimate:
    """C-index with a percentile-bootstrap interval (resamples stratified by event status)."""
    check_bootstrap_options(n_resamples, seed, level)
    point = concordance(time, event, risk)
    times, events = _survival_data(time, event)
    samples = _bootstrap_concordance(times, events, [_risk(risk, times.size)], n_resamples, seed)[0]
    low, high = percentile_interval(samples, level)
    return ConcordanceEstimate(c_index=point, low=float(low), high=float(high), n=int(times.size),
                               events=int(events.sum()), n_resamples=int(n_resamples), level=float(level),
                               method=METHOD)


def bootstrap_concordance_samples(time: ArrayLike, event: ArrayLike, risk: ArrayLike, *, n_resamples: int = 2000,
                                  seed: int = 0) -> np.ndarray:
    """C-index of every resample (n_resamples,); resample r is row r of
    ``stratified_bootstrap_indices(event, n_resamples, seed)``."""
    check_bootstrap_options(n_resamples, seed, 0.95)
    times, events = _survival_data(time, event)
    return _bootstrap_concordance(times, events, [_risk(risk, times.size)], n_resamples, seed)[0]


def paired_concordance_difference(time: ArrayLike, event: ArrayLike, risk_a: ArrayLike, risk_b: ArrayLike, *,
                                  n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Difference:
    """C(a) − C(b) on the same patients with a percentile interval from the same resamples
    (``a`` the imaging model, ``b`` the clinical-only baseline)."""
    check_bootstrap_options(n_resamples, seed, level)
    times, events = _survival_data(time, event)
    a, b = _risk(risk_a, times.size, "risk_a"), _risk(risk_b, times.size, "risk_b")
    point_a, point_b = concordance(times, events, a), concordance(times, events, b)
    samples = _bootstrap_concordance(times, events, [a, b], n_resamples, seed)
    return summarise_difference("c_index", point_a, point_b, samples[0] - samples[1], n=int(times.size),
                                level=level, method=f"paired {METHOD}")


def fit_risk_cutoffs(risk: ArrayLike, n_groups: int = 2) -> np.ndarray:
    """Quantile cut-offs (n_groups − 1,) of a (training) risk score: the median for two groups."""
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or n_groups < 2:
        raise ConfigError(f"n_groups must be an integer >= 2, got {n_groups!r}")
    return np.quantile(as_vector(risk, "risk"), np.arange(1, n_groups) / n_groups)


def risk_groups(risk: ArrayLike, *, n_groups: int | None = None,
                cutoffs: Sequence[float] | None = None) -> np.ndarray:
    """Risk group of each patient (n,) int64: 0 = lowest risk … G − 1 = highest.

    A patient is in group g when exactly g cut-offs lie strictly below its risk (a risk equal to
    a cut-off goes to the lower group). Without ``cutoffs`` they are fitted on ``risk`` itself
    (median split by default); pass cut-offs fitted on training data (:func:`fit_risk_cutoffs`)
    to group a test set. ``n_groups`` defaults to 2, or to ``len(cutoffs) + 1``.
    """
    scores = as_vector(risk, "risk")
    if cutoffs is None:
        edges = fit_risk_cutoffs(scores, 2 if n_groups is None else n_groups)
    else:
        edges = np.atleast_1d(np.asarray(cutoffs, dtype=np.float64))
        if edges.ndim != 1 or edges.size == 0 or not np.isfinite(edges).all() or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"cutoffs must be finite and strictly increasing, got {cutoffs!r}")
        if n_groups is not None and n_groups != edges.size + 1:
            raise ConfigError(f"n_groups={n_groups!r} disagrees with {edges.size} cutoffs ({edges.size + 1} groups)")
    return np.searchsorted(edges, scores, side="left").astype(np.int64)


def _logrank(times: np.ndarray, events: np.ndarray, groups: np.ndarray, names: list[Any]) -> dict[str, Any] | None:
    """Log-rank test across the groups (lifelines); None for a single group."""
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    if len(names) < 2:
        return None
    if len(names) == 2:
        first, second = groups == names[0], groups == names[1]
        result = logrank_test(times[first], times[second], events[first], events[second])
        test = "log-rank"
    else:
        result = multivariate_logrank_test(times, groups, events)
        test = "multivariate log-rank"
    return {"test": test, "statistic": float(result.test_statistic), "p_value": float(result.p_value),
            "degrees_of_freedom": len(names) - 1}


def kaplan_meier_by_group(time: ArrayLike, event: ArrayLike, groups: ArrayLike, *,
                          level: float = 0.95) -> dict[str, Any]:
    """Kaplan–Meier curve of each group and the log-rank test between them (lifelines).

    Returns ``{"groups": {name: {...}}, "logrank": {...} | None, "level": level}`` where each group
    has ``timeline``, ``survival``, ``ci_low``, ``ci_high`` (arrays (T,), starting at time 0,
    CI by lifelines' exponential Greenwood formula), ``n``, ``events`` and ``median`` (None
    when survival never falls to 0.5). ``logrank`` is None when there is only one group; with
    more than two groups it is the multivariate log-rank test. Group names are ``str(label)``.
    """
    from lifelines import KaplanMeierFitter

    if not isinstance(level, (int, float, np.floating)) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    times, events = _survival_data(time, event)
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.size != times.size:
        raise InputError("groups", f"must be 1-D with {times.size} values, got shape {labels.shape}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise InputError("groups", "has missing (NaN) group labels")
    names = list(np.unique(labels))
    curves: dict[str, Any] = {}
    for name in names:
        members = labels == name
        fitter = KaplanMeierFitter(alpha=1.0 - float(level)).fit(times[members], events[members])
        interval = fitter.confidence_interval_survival_function_.to_numpy()
        median = float(fitter.median_survival_time_)
        curves[str(name)] = {"timeline": fitter.timeline.astype(np.float64),
                             "survival": fitter.survival_function_.to_numpy()[:, 0],
                             "ci_low": interval[:, 0], "ci_high": interval[:, 1], "n": int(members.sum()),
                             "events": int(events[members].sum()), "median": median if np.isfinite(median) else None}
    return {"groups": curves, "logrank": _logrank(times, events, labels, names), "level": float(level)}
