"""Post-hoc decision rules fitted on out-of-fold (OOF) predictions: class scaling and temperature.

- **Class scaling** (reference notes §5): multiply the class probabilities by a per-class factor
  before the argmax, with factors chosen by coordinate ascent on the OOF macro-F1. It changes
  the labels only; AUCs use the unscaled probabilities.
- **Temperature scaling** (Guo et al., 2017): one scalar T > 0 dividing the logits, fitted by
  minimising the OOF negative log-likelihood. It changes calibration, not the ranking (AUC) nor
  the argmax.

The survival threshold (Youden J) lives in :func:`vbiopsy.evaluate.classification.youden_threshold`.
Fit every rule on OOF predictions only, never on test predictions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.metrics import f1_score

from vbiopsy.errors import ConfigError, InputError

DEFAULT_GRID = np.linspace(0.6, 1.4, 17)
"""The reference's scaling factors: 0.60, 0.65, …, 1.40."""


def _labels_and_probs(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y)
    if prob.ndim != 2 or prob.shape[1] < 2 or prob.shape[0] == 0:
        raise InputError("prob", f"expected shape (n ≥ 1, classes ≥ 2), got {prob.shape}")
    if not np.all(np.isfinite(prob)) or np.any(prob < 0):
        raise InputError("prob", "probabilities must be finite and ≥ 0")
    if y.shape != (prob.shape[0],):
        raise InputError("y", f"expected shape ({prob.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise InputError("y", "labels must be whole class indices")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= prob.shape[1]:
        raise InputError("y", f"class indices must be in [0, {prob.shape[1]}), got [{y.min()}, {y.max()}]")
    return y, prob


def scaled_argmax(prob: np.ndarray, scaling: np.ndarray) -> np.ndarray:
    """``argmax(prob ⊙ scaling)`` per row: ``(n, K)``, ``(K,)`` → ``(n,)`` int64 labels."""
    prob = np.asarray(prob, dtype=np.float64)
    scaling = np.asarray(scaling, dtype=np.float64)
    if prob.ndim != 2 or scaling.shape != (prob.shape[1],):
        raise InputError("scaling", f"expected shape ({prob.shape[-1]},) for prob {prob.shape}, got {scaling.shape}")
    if not np.all(np.isfinite(scaling)) or np.any(scaling <= 0):
        raise ConfigError(f"class scaling factors must be finite and > 0, got {scaling.tolist()}")
    return np.argmax(prob * scaling, axis=1).astype(np.int64)


def _macro_f1(y: np.ndarray, prob: np.ndarray, scaling: np.ndarray) -> float:
    labels = list(range(prob.shape[1]))
    return float(f1_score(y, scaled_argmax(prob, scaling), labels=labels, average="macro", zero_division=0))


def fit_class_scaling(y: np.ndarray, prob: np.ndarray, *, grid: np.ndarray = DEFAULT_GRID,
                      rounds: int = 2) -> np.ndarray:
    """Per-class factors ``s`` maximising the macro-F1 of ``argmax(prob ⊙ s)`` on OOF predictions.

    Start from ``s = 1``; for each round and each class ``c`` in order, try every grid value for
    ``s_c`` (the others fixed) and keep it only on a *strict* improvement, scanning on from the
    updated vector (reference notes §5). Macro-F1 is over all ``K`` classes (a class never
    predicted nor present scores 0). Deterministic; the result never scores below ``s = 1``.

    Args:
        y: ``(n,)`` true class indices.
        prob: ``(n, K)`` OOF class probabilities (unscaled).
        grid: candidate factors, all > 0.
        rounds: passes over the classes (≥ 1).

    Returns:
        ``(K,)`` float64 factors; each is 1.0 or a grid value.
    """
    y, prob = _labels_and_probs(y, prob)
    grid = np.asarray(grid, dtype=np.float64).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ConfigError(f"grid must be non-empty, finite and > 0, got {grid.tolist()}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ConfigError(f"rounds must be an integer ≥ 1, got {rounds!r}")
    scaling = np.ones(prob.shape[1], dtype=np.float64)
    best = _macro_f1(y, prob, scaling)
    for _ in range(int(rounds)):
        for c in range(prob.shape[1]):
            for value in grid:
                candidate = scaling.copy()
                candidate[c] = value
                score = _macro_f1(y, prob, candidate)
                if score > best:
                    best, scaling = score, candidate
    return scaling


def _logits_and_targets(logits: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Float64 tensors; ``binary`` when logits are ``(n,)`` or ``(n, 1)`` (one logit per sample)."""
    z = np.asarray(logits, dtype=np.float64)
    binary = z.ndim == 1 or (z.ndim == 2 and z.shape[1] == 1)
    z = z.reshape(-1) if binary else z
    if z.ndim != (1 if binary else 2) or z.shape[0] == 0:
        raise InputError("logits", f"expected shape (n,), (n, 1) or (n, K), got {np.shape(logits)}")
    if not np.all(np.isfinite(z)):
        raise InputError("logits", "logits must be finite")
    if binary:
        y = np.asarray(y)
        if y.shape != (z.shape[0],) or not np.all(np.isin(y, (0, 1))):
            raise InputError("y", f"expected ({z.shape[0]},) labels in {{0, 1}}, got shape {y.shape}")
        labels = y.astype(np.int64)
    else:
        labels, _ = _labels_and_probs(y, np.zeros_like(z))
    return torch.from_numpy(z), torch.from_numpy(labels), binary


def _nll(z: torch.Tensor, y: torch.Tensor, binary: bool, temperature: torch.Tensor) -> torch.Tensor:
    scaled = z / temperature
    if binary:
        return torch.nn.functional.binary_cross_entropy_with_logits(scaled, y.to(scaled.dtype))
    return torch.nn.functional.cross_entropy(scaled, y)


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, max_iter: int = 200) -> float:
    """Temperature ``T > 0`` minimising the mean NLL of ``softmax(logits / T)`` (or sigmoid) on OOF data.

    LBFGS (strong-Wolfe line search) on ``log T`` in float64, started at T = 1. If the optimum
    were not below the NLL at T = 1 (numerical failure), T = 1 is returned: the fitted
    temperature never increases the OOF NLL.

    Args:
        logits: ``(n, K)`` class logits, or ``(n,)`` / ``(n, 1)`` binary logits.
        y: ``(n,)`` true class indices (0/1 for binary).
        max_iter: LBFGS iteration limit.

    Returns:
        T (dimensionless); T > 1 softens over-confident predictions.
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be an integer ≥ 1, got {max_iter!r}")
    z, labels, binary = _logits_and_targets(logits, y)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = _nll(z, labels, binary, log_t.exp())
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        fitted = float(log_t.exp())
        at_one = float(_nll(z, labels, binary, torch.tensor(1.0, dtype=torch.float64)))
        at_fit = float(_nll(z, labels, binary, torch.tensor(fitted, dtype=torch.float64)))
    if not math.isfinite(fitted) or not math.isfinite(at_fit) or at_fit > at_one:
        return 1.0
    return fitted


def apply_temperature(logits: np.ndarray, t: float) -> np.ndarray:
    """Calibrated probabilities: ``softmax(logits / t)`` for ``(n, K)``, ``sigmoid(logits / t)`` for ``(n,)``.

    A ``(n, 1)`` input gives ``(n,)`` probabilities of the positive class.
    """
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not math.isfinite(t) or t <= 0:
        raise ConfigError(f"temperature must be a finite number > 0, got {t!r}")
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim == 1:
        return expit(z / t)
    if z.ndim == 2:
        return softmax(z / t, axis=1)
    raise InputError("logits", f"expected shape (n,), (n, 1) or (n, K), got {z.shape}")
