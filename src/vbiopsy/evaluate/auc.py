"""ROC AUC (binary, or macro one-vs-rest), its stratified bootstrap CI and the ROC curve with a CI band.

AUC is the Mann–Whitney statistic computed from mid-ranks (ties count ½):
``AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with R₊ the rank sum of the positives. Every quantity is a
sum of half-integers, so the result is the exact rational AUC rounded once; scikit-learn's
trapezoid rule agrees to ~1e-15. For K ≥ 3 classes the macro one-vs-rest average is the plain
mean over classes of AUC(y == k, prob[:, k]) (scikit-learn ``multi_class="ovr", average="macro"``).

Bootstrap: a resample is a vector of counts (how often each patient is drawn). Sorting once by
score and summing the counts within tie groups gives, for all resamples at once, the mid-ranks and
hence every resample's AUC and ROC curve in O(B·n) without re-sorting. Resamples are stratified by
class (:mod:`vbiopsy.evaluate.bootstrap`), so every class is in every resample; intervals are
percentile intervals; ROC bands are pointwise on a fixed FPR grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.bootstrap import (
    Difference, iter_stratified_indices, percentile_interval, resample_counts, summarise_difference,
)
from vbiopsy.evaluate.inputs import (
    as_labels, as_probabilities, check_bootstrap_options, check_label_range, n_classes, require_all_classes,
)

METHOD = "stratified percentile bootstrap"
DEFAULT_FPR_GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class AucEstimate:
    """AUC with its bootstrap interval; ``average`` is ``"binary"`` or ``"macro one-vs-rest"``."""

    auc: float
    low: float
    high: float
    n: int
    n_resamples: int
    level: float
    method: str
    average: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class RocBand:
    """ROC curve on a fixed FPR grid with a pointwise bootstrap band (all arrays (F,), unitless rates).

    ``tpr`` is the curve of the full data; for K ≥ 3 classes each class's one-vs-rest curve is
    interpolated on the grid and the K curves are averaged (macro). Where the curve rises
    vertically at a grid FPR the upper TPR is taken, so ``tpr[0]`` is the TPR reached with no
    false positive (prepend (0, 0) to draw from the origin).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    low: np.ndarray
    high: np.ndarray
    auc: AucEstimate

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (arrays as lists)."""
        return {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist(), "low": self.low.tolist(),
                "high": self.high.tolist(), "auc": self.auc.to_dict()}


@dataclass(frozen=True)
class _RankedColumn:
    """One one-vs-rest problem sorted once by score: sort order, tie-group starts, positives in that order."""

    order: np.ndarray
    starts: np.ndarray
    positive: np.ndarray
    n_pos: int
    n_neg: int


def _ranked_columns(y: np.ndarray, prob: np.ndarray) -> list[_RankedColumn]:
    """The one-vs-rest problems: one (class 1) for K = 2, K for K ≥ 3."""
    if prob.ndim == 1:
        problems = [(y == 1, prob)]
    elif prob.shape[1] == 2:
        problems = [(y == 1, prob[:, 1])]
    else:
        problems = [(y == k, prob[:, k]) for k in range(prob.shape[1])]
    columns = []
    for positive, score in problems:
        order = np.argsort(score, kind="stable")
        ranked = score[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        n_pos = int(positive.sum())
        columns.append(_RankedColumn(order, starts, positive[order].astype(np.float64), n_pos, y.size - n_pos))
    return columns


def _group_counts(counts: np.ndarray, column: _RankedColumn) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per tie group (ascending score) for each resample: two (b, G) arrays."""
    weights = counts[:, column.order]
    positives = np.add.reduceat(weights * column.positive, column.starts, axis=1)
    return positives, np.add.reduceat(weights, column.starts, axis=1) - positives


def _auc_from_groups(positives: np.ndarray, negatives: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """Mann–Whitney AUC per resample (b,) from mid-ranks of the tie groups."""
    total = positives + negatives
    midrank = np.cumsum(total, axis=1) - (total - 1.0) / 2.0
    rank_sum = (positives * midrank).sum(axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _tpr_on_grid(positives: np.ndarray, negatives: np.ndarray, n_pos: int, n_neg: int,
                 grid: np.ndarray) -> np.ndarray:
    """TPR of each resample's ROC curve at each grid FPR, (b, F), by linear interpolation.

    The curve's vertices are (FP, TP) counts with the threshold lowered one tie group at a time
    from above the maximum score. For each grid value the last vertex with FP ≤ FPR·n₋ is found by
    one ``searchsorted`` over all rows at once (row r offset by r·(n₋+1) keeps the keys sorted).
    """
    b = positives.shape[0]
    zeros = np.zeros((b, 1))
    tp = np.concatenate([zeros, np.cumsum(positives[:, ::-1], axis=1)], axis=1)
    fp = np.concatenate([zeros, np.cumsum(negatives[:, ::-1], axis=1)], axis=1)
    vertices = fp.shape[1]
    target = grid * n_neg
    rows = np.arange(b)[:, None]
    keys = (fp + (n_neg + 1) * rows).ravel()
    queries = (np.floor(target + 1e-9)[None, :] + (n_neg + 1) * rows).ravel()
    after = np.searchsorted(keys, queries, side="right").reshape(b, grid.size) - vertices * rows
    low = after - 1
    high = np.minimum(after, vertices - 1)
    fp_low, fp_high, tp_low, tp_high = fp[rows, low], fp[rows, high], tp[rows, low], tp[rows, high]
    span = fp_high - fp_low
    fraction = np.clip((target - fp_low) / np.where(span > 0, span, 1.0), 0.0, 1.0) * (span > 0)
    return (tp_low + fraction * (tp_high - tp_low)) / n_pos


def _validated(y: ArrayLike, prob: ArrayLike, where: str = "prob") -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities checked for AUC: lengths, ranges, every class present."""
    labels = as_labels(y)
    probabilities = as_probabilities(prob, labels.size, where)
    k = n_classes(probabilities)
    check_label_range(labels, k)
    require_all_classes(labels, k, "AUC (binary or macro one-vs-rest)")
    return labels, probabilities


def _average_name(prob: np.ndarray) -> str:
    return "binary" if n_classes(prob) == 2 else "macro one-vs-rest"


def _point_auc(y: np.ndarray, columns: list[_RankedColumn]) -> float:
    """AUC of the full data (every patient counted once)."""
    ones = np.ones((1, y.size))
    return float(np.mean([_auc_from_groups(*_group_counts(ones, c), c.n_pos, c.n_neg)[0] for c in columns]))


def _bootstrap(y: np.ndarray, columns_per_model: list[list[_RankedColumn]], n_resamples: int, seed: int,
               grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-resample AUC of each model, (M, B), and (if ``grid``) model 0's macro TPR on the grid, (B, F)."""
    aucs = np.empty((len(columns_per_model), n_resamples))
    tprs = None if grid is None else np.empty((n_resamples, grid.size))
    start = 0
    for indices in iter_stratified_indices(y, n_resamples, seed):
        counts = resample_counts(indices, y.size)
        stop = start + counts.shape[0]
        for m, columns in enumerate(columns_per_model):
            per_class, curves = [], []
            for column in columns:
                positives, negatives = _group_counts(counts, column)
                per_class.append(_auc_from_groups(positives, negatives, column.n_pos, column.n_neg))
                if tprs is not None and grid is not None and m == 0:
                    curves.append(_tpr_on_grid(positives, negatives, column.n_pos, column.n_neg, grid))
            aucs[m, start:stop] = np.mean(per_class, axis=0)
            if tprs is not None and curves:
                tprs[start:stop] = np.mean(curves, axis=0)
        start = stop
    return aucs, tprs


def present_class_scores(y: np.ndarray, prob: np.ndarray,
                         names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Labels, scores and a description for the AUC. A class absent from ``y`` (e.g. grade III kept in
    training by the rare-class policy) is left out: the macro average runs over the present classes
    with the probabilities renormalised over them, and the description says so."""
    if prob.ndim == 1:
        return y, prob, "binary"
    present = np.unique(y)
    if len(present) == prob.shape[1]:
        return y, prob, "macro one-vs-rest"
    if len(present) < 2:
        raise InputError("y", f"only class {present.tolist()} present; an AUC needs two classes")
    sub = prob[:, present]
    sub = sub / sub.sum(axis=1, keepdims=True)
    remap = {int(c): i for i, c in enumerate(present)}
    label = names or [str(k) for k in range(prob.shape[1])]
    kept = ", ".join(label[int(c)] for c in present)
    absent = ", ".join(label[k] for k in range(prob.shape[1]) if k not in set(present.tolist()))
    how = "binary between" if len(present) == 2 else "macro one-vs-rest over"
    scores = sub[:, 1] if len(present) == 2 else sub
    return np.array([remap[int(v)] for v in y]), scores, (
        f"{how} {kept} ({absent} absent from these patients; probabilities renormalised over the others)")


def roc_auc(y: ArrayLike, prob: ArrayLike) -> float:
    """Binary AUC, or macro one-vs-rest AUC for (n, K ≥ 3) probabilities.

    Equals ``sklearn.metrics.roc_auc_score(y, prob, multi_class="ovr", average="macro")``.
    Raises :class:`InputError` naming a class with no sample (AUC is undefined for it).
    """
    labels, probabilities = _validated(y, prob)
    return _point_auc(labels, _ranked_columns(labels, probabilities))


def bootstrap_auc_samples(y: ArrayLike, prob: ArrayLike, *, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """The AUC of every bootstrap resample, (n_resamples,); resample r is row r of
    ``stratified_bootstrap_indices(y, n_resamples, seed)``."""
    check_bootstrap_options(n_resamples, seed, 0.95)
    labels, probabilities = _validated(y, prob)
    return _bootstrap(labels, [_ranked_columns(labels, probabilities)], n_resamples, seed)[0][0]


def bootstrap_auc(y: ArrayLike, prob: ArrayLike, *, n_resamples: int = 2000, seed: int = 0,
                  level: float = 0.95) -> AucEstimate:
    """AUC of the full data with a stratified percentile-bootstrap interval (resampling within each class)."""
    check_bootstrap_options(n_resamples, seed, level)
    labels, probabilities = _validated(y, prob)
    columns = _ranked_columns(labels, probabilities)
    samples = _bootstrap(labels, [columns], n_resamples, seed)[0][0]
    low, high = percentile_interval(samples, level)
    return AucEstimate(auc=_point_auc(labels, columns), low=float(low), high=float(high), n=int(labels.size),
                       n_resamples=int(n_resamples), level=float(level), method=METHOD,
                       average=_average_name(probabilities))


def paired_bootstrap_difference(y: ArrayLike, prob_a: ArrayLike, prob_b: ArrayLike, *,
                                metric: Literal["auc"] = "auc", n_resamples: int = 2000, seed: int = 0,
                                level: float = 0.95) -> Difference:
    """AUC(a) − AUC(b) on the same patients, with a percentile interval from the same resamples.

    Typical use: ``a`` the imaging model, ``b`` the clinical-only baseline. With the same ``seed``
    the resamples are those of :func:`bootstrap_auc`, so each resample's difference is the
    difference of the two models' resample AUCs.
    """
    if metric != "auc":
        raise ConfigError(f"metric must be 'auc' (use survival.paired_concordance_difference for the "
                          f"C-index), got {metric!r}")
    check_bootstrap_options(n_resamples, seed, level)
    labels, a = _validated(y, prob_a, "prob_a")
    b = as_probabilities(prob_b, labels.size, "prob_b")
    if n_classes(a) != n_classes(b):
        raise InputError("prob_b", f"has {n_classes(b)} classes but prob_a has {n_classes(a)}")
    columns_a, columns_b = _ranked_columns(labels, a), _ranked_columns(labels, b)
    samples = _bootstrap(labels, [columns_a, columns_b], n_resamples, seed)[0]
    return summarise_difference(f"auc ({_average_name(a)})", _point_auc(labels, columns_a),
                                _point_auc(labels, columns_b), samples[0] - samples[1], n=int(labels.size),
                                level=level, method=f"paired {METHOD}")


def _check_grid(fpr_grid: ArrayLike | None) -> np.ndarray:
    if fpr_grid is None:
        return DEFAULT_FPR_GRID.copy()
    grid = np.asarray(fpr_grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or not np.isfinite(grid).all() or grid.min() < 0 or grid.max() > 1 \
            or np.any(np.diff(grid) <= 0):
        raise ConfigError(f"fpr_grid must be ≥ 2 strictly increasing values in [0, 1], got {fpr_grid!r}")
    return grid


def roc_curve_band(y: ArrayLike, prob: ArrayLike, *, fpr_grid: ArrayLike | None = None, n_resamples: int = 2000,
                   seed: int = 0, level: float = 0.95) -> RocBand:
    """ROC curve (macro-averaged over one-vs-rest classes for K ≥ 3) on ``fpr_grid`` (default 0, 0.01, …, 1)
    with a pointwise percentile band, and the AUC estimate from the same resamples."""
    check_bootstrap_options(n_resamples, seed, level)
    grid = _check_grid(fpr_grid)
    labels, probabilities = _validated(y, prob)
    columns = _ranked_columns(labels, probabilities)
    ones = np.ones((1, labels.size))
    tpr = np.mean([_tpr_on_grid(*_group_counts(ones, c), c.n_pos, c.n_neg, grid)[0] for c in columns], axis=0)
    aucs, tprs = _bootstrap(labels, [columns], n_resamples, seed, grid)
    low, high = percentile_interval(tprs, level)
    auc_low, auc_high = percentile_interval(aucs[0], level)
    estimate = AucEstimate(auc=_point_auc(labels, columns), low=float(auc_low), high=float(auc_high),
                           n=int(labels.size), n_resamples=int(n_resamples), level=float(level), method=METHOD,
                           average=_average_name(probabilities))
    return RocBand(fpr=grid, tpr=tpr, low=low, high=high, auc=estimate)
