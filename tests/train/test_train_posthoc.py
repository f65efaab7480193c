"""Post-hoc rules: class scaling (macro-F1 coordinate ascent) and temperature scaling vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.metrics import f1_score

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.posthoc import DEFAULT_GRID, apply_temperature, fit_class_scaling, fit_temperature, scaled_argmax


def underpredicted_rare_class(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """OOF probabilities whose argmax almost never picks the rare class 1 (as grade III in ASLNet)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=300, p=[0.2, 0.15, 0.65])
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y] + np.array([0.0, -1.2, 0.6])
    return y, softmax(logits, axis=1)


def macro_f1(y: np.ndarray, prob: np.ndarray, s: np.ndarray) -> float:
    return f1_score(y, np.argmax(prob * s, axis=1), labels=[0, 1, 2], average="macro", zero_division=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_scaling_never_worse_deterministic_and_on_grid(seed: int) -> None:
    y, prob = underpredicted_rare_class(seed)
    s = fit_class_scaling(y, prob)
    assert s.shape == (3,)
    assert macro_f1(y, prob, s) >= macro_f1(y, prob, np.ones(3))
    assert np.all(np.isin(np.round(s, 12), np.round(DEFAULT_GRID, 12)))
    np.testing.assert_array_equal(fit_class_scaling(y, prob), s)
    np.testing.assert_array_equal(scaled_argmax(prob, s), np.argmax(prob * s, axis=1))


def test_class_scaling_improves_the_rare_class() -> None:
    y, prob = underpredicted_rare_class(0)
    s = fit_class_scaling(y, prob)
    assert macro_f1(y, prob, s) > macro_f1(y, prob, np.ones(3)) + 0.01
    assert s[1] > 1.0 > s[2]  # the under-predicted rare class is boosted, the over-predicted one damped


def test_class_scaling_keeps_ones_without_strict_improvement_and_respects_grid() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    prob = np.eye(3)[y] * 0.9 + 0.05  # already perfect: nothing can strictly improve
    np.testing.assert_array_equal(fit_class_scaling(y, prob), np.ones(3))
    grid = np.array([0.5, 2.0])
    yr, pr = underpredicted_rare_class(1)
    s = fit_class_scaling(yr, pr, grid=grid, rounds=1)
    assert np.all(np.isin(s, [0.5, 1.0, 2.0]))
    with pytest.raises(ConfigError, match="grid"):
        fit_class_scaling(yr, pr, grid=np.array([0.0, 1.0]))
    with pytest.raises(ConfigError, match="rounds"):
        fit_class_scaling(yr, pr, rounds=0)
    with pytest.raises(InputError, match="class indices"):
        fit_class_scaling(np.array([0, 3]), np.full((2, 3), 1 / 3))


def _scipy_temperature(z: np.ndarray, y: np.ndarray) -> float:
    if z.ndim == 1:
        def nll(t: float) -> float:
            p = np.clip(expit(z / t), 1e-300, 1 - 1e-16)
            return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    else:
        def nll(t: float) -> float:
            return -np.mean(log_softmax(z / t, axis=1)[np.arange(len(y)), y])
    return minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8}).x


def test_temperature_recovers_known_value_multiclass() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(8000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(z, axis=1)])
    overconfident = z * 2.5
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.06)
    assert t == pytest.approx(_scipy_temperature(overconfident, y), rel=1e-4)
    calibrated = apply_temperature(overconfident, t)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), overconfident.argmax(axis=1))


def test_temperature_binary_and_nll_never_increases() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(scale=1.5, size=4000)
    y = (rng.random(4000) < expit(z)).astype(int)
    under = z * 0.5  # under-confident: T < 1
    t = fit_temperature(under[:, None], y)
    assert t == pytest.approx(0.5, rel=0.08)
    assert t == pytest.approx(_scipy_temperature(under, y), rel=1e-4)

    def nll(p: np.ndarray) -> float:
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    assert nll(apply_temperature(under, t)) <= nll(apply_temperature(under, 1.0))
    np.testing.assert_allclose(apply_temperature(under[:, None], t), expit(under / t))


def test_temperature_validation() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        apply_temperature(np.zeros((2, 3)), 0.0)
    with pytest.raises(InputError, match="logits"):
        fit_temperature(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(InputError, match="y"):
        fit_temperature(np.zeros(3), np.array([0, 1, 2]))
