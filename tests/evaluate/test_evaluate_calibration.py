"""Brier score and calibration curve against scikit-learn; ECE against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_helpers import binary_predictions, multiclass_predictions
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import brier_score_loss

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.calibration import brier_score, calibration_curve


def test_binary_brier_matches_sklearn_for_both_shapes() -> None:
    y, prob = binary_predictions(70, 0, decimals=None)
    assert brier_score(y, prob) == pytest.approx(brier_score_loss(y, prob), abs=1e-15)
    assert brier_score(y, np.column_stack([1 - prob, prob])) == pytest.approx(brier_score_loss(y, prob), abs=1e-15)


@pytest.mark.parametrize("k", [3, 4])
def test_multiclass_brier_matches_sklearn_and_the_definition(k: int) -> None:
    y, prob = multiclass_predictions(50, k, 1)
    ours = brier_score(y, prob)
    assert ours == pytest.approx(brier_score_loss(y, prob, labels=list(range(k))), abs=1e-15)
    by_hand = np.mean([sum((prob[i, c] - (y[i] == c)) ** 2 for c in range(k)) for i in range(y.size)])
    assert ours == pytest.approx(by_hand, abs=1e-15)


def test_brier_extremes() -> None:
    assert brier_score([0, 1], [0.0, 1.0]) == 0.0
    assert brier_score([0, 1], [1.0, 0.0]) == 1.0
    assert brier_score([0, 2], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]) == 2.0


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10])
def test_calibration_curve_matches_sklearn(strategy: str, n_bins: int) -> None:
    y, prob = binary_predictions(90, 2, decimals=2)  # decimals=2: many values sit exactly on bin edges
    curve = calibration_curve(y, prob, n_bins=n_bins, strategy=strategy)
    observed, predicted = sk_calibration_curve(y, prob, n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(curve.observed_fraction, observed, atol=1e-15)
    np.testing.assert_allclose(curve.mean_predicted, predicted, atol=1e-15)
    assert curve.count.sum() == 90 and (curve.count > 0).all()
    ece = np.sum(curve.count / 90 * np.abs(observed - predicted))
    assert curve.ece == pytest.approx(ece, abs=1e-15)


def test_uniform_bin_counts_match_an_independent_rule() -> None:
    prob = np.random.default_rng(3).random(200)  # continuous: no value on an edge
    y = (np.random.default_rng(4).random(200) < prob).astype(int)
    curve = calibration_curve(y, prob, n_bins=10)
    expected = np.bincount(np.floor(prob * 10).astype(int), minlength=10)
    assert curve.count.tolist() == expected[expected > 0].tolist()


def test_ece_hand_cases() -> None:
    y = np.array([1] * 7 + [0] * 3)
    assert calibration_curve(y, np.full(10, 0.7)).ece == pytest.approx(0.0, abs=1e-15)
    assert calibration_curve(y, np.full(10, 0.9)).ece == pytest.approx(0.2)
    # two bins: 0.2 predicted / 0.5 observed (4 patients), 0.8 predicted / 0.5 observed (4 patients)
    curve = calibration_curve([0, 1, 0, 1, 0, 1, 0, 1], [0.2] * 4 + [0.8] * 4, n_bins=2)
    assert curve.count.tolist() == [4, 4] and curve.ece == pytest.approx(0.3)


def test_multiclass_top_label_and_one_vs_rest_targets() -> None:
    y = np.array([0, 1, 2, 2])
    prob = np.array([[0.6, 0.3, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    top = calibration_curve(y, prob, n_bins=2)
    assert top.target == "top-label confidence"
    # confidences 0.6, 0.7, 0.8, 0.6 all in (0.5, 1]; right: yes, no, yes, yes
    assert top.mean_predicted.tolist() == pytest.approx([0.675]) and top.observed_fraction.tolist() == [0.75]
    one_vs_rest = calibration_curve(y, prob, n_bins=5, class_index=2)
    observed, predicted = sk_calibration_curve(y == 2, prob[:, 2], n_bins=5)
    np.testing.assert_allclose(one_vs_rest.observed_fraction, observed)
    np.testing.assert_allclose(one_vs_rest.mean_predicted, predicted)


def test_calibration_options_and_inputs_are_validated() -> None:
    with pytest.raises(ConfigError, match="n_bins"):
        calibration_curve([0, 1], [0.1, 0.9], n_bins=0)
    with pytest.raises(ConfigError, match="strategy"):
        calibration_curve([0, 1], [0.1, 0.9], strategy="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="class_index"):
        calibration_curve([0, 1], [[0.9, 0.1], [0.1, 0.9]], class_index=2)
    with pytest.raises(InputError, match="prob"):
        brier_score([0, 1], [0.1, 1.5])
    with pytest.raises(InputError, match="labels must be in 0..1"):
        brier_score([0, 3], [0.1, 0.5])
