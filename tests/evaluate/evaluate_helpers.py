"""Synthetic predictions for the evaluation tests: informative but imperfect, with many ties."""

from __future__ import annotations

import numpy as np


def binary_predictions(n: int, seed: int, *, decimals: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) in {0, 1} (both present) and P(class 1) (n,), rounded to ``decimals`` to make ties."""
    rng = np.random.default_rng(seed)
    y = rng.permutation((np.arange(n) < max(1, round(0.45 * n))).astype(int))
    prob = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, (prob if decimals is None else np.round(prob, decimals))


def multiclass_predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) with every class of 0..k-1 present and (n, k) probabilities on a coarse rational grid
    (integer weights 1..6 normalised), so tied scores are common."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.arange(k), rng.integers(0, k, n - k)])
    weights = rng.integers(1, 5, size=(n, k)).astype(float)
    weights[np.arange(n), y] += rng.integers(0, 3, n)
    return y, weights / weights.sum(axis=1, keepdims=True)


def survival_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time in whole months with ties, event 0/1, risk with ties) where higher risk shortens survival."""
    rng = np.random.default_rng(seed)
    risk = np.round(rng.normal(0.0, 1.0, n), 1)
    time = np.ceil(rng.exponential(24.0 * np.exp(-0.8 * risk)))
    censor = np.ceil(rng.uniform(6.0, 60.0, n))
    event = (time <= censor).astype(int)
    return np.minimum(time, censor), event, risk
