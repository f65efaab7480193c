"""Stratified bootstrap resampling shared by every bootstrapped metric (AUC, ROC band, C-index).

Resamples are drawn within each stratum (class label, or event status for survival) with the
stratum sizes kept, so every resample has every class and a metric such as AUC is always defined.
Draws come from ``np.random.default_rng(seed)`` in chunks whose size depends only on ``n``: the
same ``(strata, n_resamples, seed)`` give the same resamples in every function of this package,
which is what makes a paired comparison (model vs baseline) paired.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vbiopsy.evaluate.inputs import as_labels, check_bootstrap_options

CHUNK_ELEMENTS = 1 << 20  # resample-by-sample elements per chunk: bounds memory at ~8 MB per float64 array


def rows_per_chunk(n: int) -> int:
    """Resamples per chunk for ``n`` samples (a function of ``n`` only, so draws are reproducible)."""
    return max(1, CHUNK_ELEMENTS // max(n, 1))


def iter_stratified_indices(strata: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield chunks of resample indices, each (b, n) int64, b ≤ :func:`rows_per_chunk`.

    Row r holds, for each stratum in increasing order, ``n_s`` indices drawn with replacement from
    that stratum's members (so stratum sizes are kept). ``strata`` is any (n,) integer array.
    """
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    step = rows_per_chunk(strata.size)
    for start in range(0, n_resamples, step):
        rows = min(step, n_resamples - start)
        yield np.concatenate([m[rng.integers(0, m.size, size=(rows, m.size))] for m in members], axis=1)


def stratified_bootstrap_indices(strata: ArrayLike, n_resamples: int, seed: int = 0) -> np.ndarray:
    """All resample indices at once, (n_resamples, n): exactly those the bootstrapped metrics use
    (strata = the class labels for AUC, the event indicator for the C-index)."""
    check_bootstrap_options(n_resamples, seed, 0.95)
    groups = as_labels(strata, "strata")
    return np.concatenate(list(iter_stratified_indices(groups, n_resamples, seed)), axis=0)


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each sample occurs in each resample: (b, n) float64 from (b, m) indices."""
    b = indices.shape[0]
    flat = (indices + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided percentile interval along axis 0 (linear interpolation, as ``scipy.stats.bootstrap``)."""
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high


@dataclass(frozen=True)
class Difference:
    """``a − b`` of a metric on the same patients, with a paired percentile-bootstrap interval.

    Both models are scored on the same resamples; an interval that contains 0 means the data do
    not show a difference at this level.
    """

    metric: str
    difference: float
    low: float
    high: float
    a: float
    b: float
    n: int
    n_resamples: int
    level: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON-ready)."""
        return asdict(self)


def summarise_difference(metric: str, a: float, b: float, samples: np.ndarray, *, n: int, level: float,
                         method: str) -> Difference:
    """:class:`Difference` from point values and the per-resample differences (B,)."""
    low, high = percentile_interval(samples, level)
    return Difference(metric=metric, difference=float(a - b), low=float(low), high=float(high), a=float(a),
                      b=float(b), n=n, n_resamples=int(samples.size), level=float(level), method=method)
