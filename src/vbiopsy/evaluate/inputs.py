"""Validation of metric inputs: class labels, predicted probabilities and bootstrap options.

Every public metric in :mod:`vbiopsy.evaluate` calls these first, so a bad array fails with one
line that names the argument and the offending value instead of a NaN or a NumPy traceback deep
inside a computation.

Conventions: labels are integer class indices ``0..K-1``; probabilities are ``(n,)`` for a binary
problem (P(class 1)) or ``(n, K)`` with rows summing to 1 (within :data:`ROW_SUM_TOLERANCE`, not
renormalised).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from vbiopsy.errors import ConfigError, InputError

ROW_SUM_TOLERANCE = 1e-4


def _first_bad(values: np.ndarray, bad: np.ndarray) -> str:
    """``'value V at index I'`` for the first ``True`` of ``bad`` (flat index of ``values``)."""
    index = int(np.flatnonzero(bad.ravel())[0])
    return f"value {values.ravel()[index]!r} at index {np.unravel_index(index, values.shape)}"


def as_vector(values: ArrayLike, where: str) -> np.ndarray:
    """``values`` as a finite, non-empty 1-D float64 array."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"not numeric ({exc})") from None
    if array.ndim != 1:
        raise InputError(where, f"must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise InputError(where, "is empty")
    if not np.isfinite(array).all():
        raise InputError(where, f"must be finite, got {_first_bad(array, ~np.isfinite(array))}")
    return array


def as_labels(y: ArrayLike, where: str = "y") -> np.ndarray:
    """Integer class indices (n,) int64; floats are accepted only when integer-valued (0.0, 1.0)."""
    values = as_vector(y, where)
    bad = (values != np.round(values)) | (values < 0)
    if bad.any():
        raise InputError(where, f"class labels must be integers >= 0, got {_first_bad(values, bad)}")
    return values.astype(np.int64)


def as_probabilities(prob: ArrayLike, n: int | None, where: str = "prob") -> np.ndarray:
    """Probabilities (n,) or (n, K ≥ 2) as float64, finite, in [0, 1], rows of (n, K) summing to 1.

    A (n, 1) array is read as (n,). ``n=None`` skips the length check.
    """
    try:
        array = np.asarray(prob, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"not numeric ({exc})") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (1, 2):
        raise InputError(where, f"must be (n,) or (n, K), got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise InputError(where, f"has {array.shape[0]} rows but y has {n}")
    if array.size == 0:
        raise InputError(where, "is empty")
    if not np.isfinite(array).all():
        raise InputError(where, f"must be finite, got {_first_bad(array, ~np.isfinite(array))}")
    outside = (array < 0.0) | (array > 1.0)
    if outside.any():
        raise InputError(where, f"probabilities must lie in [0, 1], got {_first_bad(array, outside)}")
    if array.ndim == 2:
        sums = array.sum(axis=1)
        off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise InputError(where, f"row {row} sums to {sums[row]:.6g}, not 1 (tolerance {ROW_SUM_TOLERANCE:g})")
    return array


def n_classes(prob: np.ndarray) -> int:
    """Number of classes K: 2 for (n,), else the number of columns."""
    return 2 if prob.ndim == 1 else int(prob.shape[1])


def check_label_range(y: np.ndarray, k: int, where: str = "y") -> None:
    """Raise if a label is outside ``0..k-1``."""
    bad = y >= k
    if bad.any():
        raise InputError(where, f"labels must be in 0..{k - 1} (from the probability columns), "
                                f"got {_first_bad(y, bad)}")


def require_all_classes(y: np.ndarray, k: int, purpose: str, where: str = "y") -> None:
    """Raise, naming the class, if any of ``0..k-1`` has no sample in ``y``."""
    counts = np.bincount(y, minlength=k)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise InputError(where, f"class {int(missing[0])} has no sample; {purpose} needs every class 0..{k - 1} "
                                f"(counts per class: {counts.tolist()})")


def labels_and_probabilities(y: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``(y, prob, K)``: lengths match and labels lie in ``0..K-1``."""
    labels = as_labels(y)
    probabilities = as_probabilities(prob, labels.size)
    k = n_classes(probabilities)
    check_label_range(labels, k)
    return labels, probabilities, k


def binary_problem(y: ArrayLike, prob: ArrayLike, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    """``(y ∈ {0,1}, P(class 1))`` from (n,) or (n, 2) probabilities; both classes must be present."""
    labels, probabilities, k = labels_and_probabilities(y, prob)
    if k != 2:
        raise InputError("prob", f"{purpose} is binary: pass P(positive) as (n,) or (n, 2), got {k} columns")
    require_all_classes(labels, 2, purpose)
    return labels, probabilities if probabilities.ndim == 1 else probabilities[:, 1]


def check_bootstrap_options(n_resamples: int, seed: int, level: float) -> None:
    """Raise :class:`ConfigError` for a non-positive resample count, negative seed or level ∉ (0, 1)."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(level, (int, float, np.floating)) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")


def class_names(labels: Sequence[str] | None, k: int) -> list[str]:
    """Display names of the K classes (default ``'0'..'K-1'``); raise if the count or uniqueness is wrong."""
    if labels is None:
        return [str(i) for i in range(k)]
    names = [str(name) for name in labels]
    if len(names) != k or len(set(names)) != k:
        raise ConfigError(f"labels must be {k} distinct names (one per probability column), got {list(labels)!r}")
    return names
