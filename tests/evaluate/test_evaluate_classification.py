"""Threshold metrics, decision rules, Youden and McNemar against scikit-learn, statsmodels and hand counts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from evaluate_helpers import binary_predictions, multiclass_predictions
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.classification import (
    classification_metrics, confusion_matrix, mcnemar_test, metrics_from_confusion, predict_labels, youden_threshold,
)


def assert_matches_sklearn(result: dict, y: np.ndarray, pred: np.ndarray, k: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UndefinedMetricWarning, UserWarning))
        assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-15)
        assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-15)
        for average in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
            assert result[f"precision_{average}"] == pytest.approx(p, abs=1e-15)
            assert result[f"recall_{average}"] == pytest.approx(r, abs=1e-15)
            assert result[f"f1_{average}"] == pytest.approx(f, abs=1e-15)
        p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    per_class = list(result["per_class"].values())
    np.testing.assert_allclose([c["precision"] for c in per_class], p, atol=1e-15)
    np.testing.assert_allclose([c["recall"] for c in per_class], r, atol=1e-15)
    np.testing.assert_allclose([c["f1"] for c in per_class], f, atol=1e-15)
    assert [c["support"] for c in per_class] == s.tolist()
    assert result["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(k)).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_argmax_and_scaled_argmax_match_sklearn(seed: int) -> None:
    y, prob = multiclass_predictions(60, 3, seed)
    for scaling in (None, [1.3, 0.7, 1.0]):
        result = classification_metrics(y, prob, labels=["II", "III", "IV"], class_scaling=scaling)
        pred = np.argmax(prob * (1.0 if scaling is None else np.asarray(scaling)), axis=1)
        assert_matches_sklearn(result, y, pred, 3)
        assert list(result["per_class"]) == ["II", "III", "IV"]
        assert result["n"] == 60 and sum(result["n_per_class"].values()) == 60
        assert result["decision_rule"] == ("argmax" if scaling is None else "scaled argmax (s = [1.3, 0.7, 1.0])")


@pytest.mark.parametrize("threshold", [None, 0.3, 0.62])
def test_binary_threshold_metrics_match_sklearn(threshold: float | None) -> None:
    y, prob = binary_predictions(50, 3, decimals=2)
    result = classification_metrics(y, prob, threshold=threshold)
    pred = (prob >= (0.5 if threshold is None else threshold)).astype(int)
    assert_matches_sklearn(result, y, pred, 2)
    assert result["decision_rule"] == f"p >= {0.5 if threshold is None else threshold:g}"


def test_class_absent_from_y_follows_sklearn_conventions() -> None:
    """A grade-III-free test set: the class is reported with support 0; balanced accuracy skips it."""
    y, prob = multiclass_predictions(40, 3, 8)
    keep = y != 1
    y, prob = y[keep], prob[keep]
    result = classification_metrics(y, prob)
    pred = prob.argmax(axis=1)
    assert (pred == 1).any()  # the absent class is still predicted: macro means include it, as in sklearn
    assert_matches_sklearn(result, y, pred, 3)
    assert result["per_class"]["1"]["support"] == 0
    assert result["macro_over"] == ["0", "1", "2"]


def test_hand_counted_confusion_matrix_and_metrics() -> None:
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 1, 0, 1, 2, 2]
    matrix = confusion_matrix(y, pred, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    summary, per_class = metrics_from_confusion(matrix)
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    np.testing.assert_allclose(per_class["precision"], [1, 1 / 2, 1 / 2])
    np.testing.assert_allclose(per_class["f1"], [0.8, 0.5, 2 / 3])
    assert summary["recall_weighted"] == pytest.approx(summary["accuracy"])  # weighted recall is accuracy


def test_decision_rules() -> None:
    assert predict_labels([0.5, 0.49, 0.51]).tolist() == [1, 0, 1]  # p >= 0.5 for (n,)
    assert predict_labels([0.3, 0.29], threshold=0.3).tolist() == [1, 0]
    assert predict_labels([[0.4, 0.4, 0.2], [0.2, 0.3, 0.5]]).tolist() == [0, 2]  # ties → lowest class
    assert predict_labels([[0.5, 0.3, 0.2]], class_scaling=[0.5, 1, 1]).tolist() == [1]  # 0.25 < 0.3
    assert predict_labels([[0.6, 0.4]], threshold=0.4).tolist() == [1]


@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 0.5, "class_scaling": [1, 1, 1]}, "not both"),
    ({"threshold": 0.5}, "binary"),
    ({"class_scaling": [1, 1]}, "3 finite positive"),
    ({"class_scaling": [1, -1, 1]}, "3 finite positive"),
    ({"labels": ["a", "b"]}, "3 distinct names"),
])
def test_bad_rule_options_raise_config_error(options: dict, message: str) -> None:
    y, prob = multiclass_predictions(12, 3, 0)
    with pytest.raises(ConfigError, match=message):
        classification_metrics(y, prob, **options)


def test_threshold_out_of_range_raises() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        predict_labels([0.2, 0.8], threshold=1.5)
    with pytest.raises(InputError, match="pred"):
        confusion_matrix([0, 1], [0, 1, 1], 2)


def reference_youden(y: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    """The reference code's loop, written out: 1001 thresholds, p >= t, guarded rates, first maximum."""
    best_t, best_j = 0.5, -np.inf
    for t in np.linspace(0, 1, 1001):
        pred = prob >= t
        tp, fn = np.sum(pred & (y == 1)), np.sum(~pred & (y == 1))
        tn, fp = np.sum(~pred & (y == 0)), np.sum(pred & (y == 0))
        j = tp / (tp + fn + 1e-8) + tn / (tn + fp + 1e-8) - 1
        if j > best_j:
            best_t, best_j = t, j
    return float(best_t), float(best_j)


@pytest.mark.parametrize(("seed", "decimals"), [(0, 3), (1, 2), (2, None)])
def test_youden_matches_the_reference_loop_and_sklearn_roc(seed: int, decimals: int | None) -> None:
    y, prob = binary_predictions(80, seed, decimals=decimals)
    t, j = youden_threshold(y, prob)
    ref_t, ref_j = reference_youden(y, prob)
    assert t == ref_t and j == pytest.approx(ref_j, abs=1e-15)
    fpr, tpr, _ = skm.roc_curve(y, prob)
    if decimals is not None and decimals <= 3:  # every distinct score is a candidate threshold
        assert j == pytest.approx(np.max(tpr - fpr), abs=1e-7)
    else:
        assert j <= np.max(tpr - fpr) + 1e-12


def test_youden_picks_the_first_maximum() -> None:
    y = np.array([0, 0, 1, 1])
    t, j = youden_threshold(y, np.array([0.1, 0.2, 0.6, 0.7]))
    assert t == pytest.approx(0.201) and j == pytest.approx(1.0, abs=1e-8)  # any t in (0.2, 0.6] separates


def test_youden_needs_both_classes_and_binary_probabilities() -> None:
    with pytest.raises(InputError, match="class 1 has no sample"):
        youden_threshold([0, 0, 0], [0.1, 0.2, 0.3])
    y, prob = multiclass_predictions(12, 3, 0)
    with pytest.raises(InputError, match="binary"):
        youden_threshold(y, prob)
    with pytest.raises(ConfigError, match="grid"):
        youden_threshold([0, 1], [0.1, 0.2], grid=1)


def predictions_with_disagreements(b: int, c: int, both_right: int = 7, both_wrong: int = 3) -> tuple:
    """(y, pred_a, pred_b) with b cases only a gets right and c only b gets right."""
    y = np.zeros(b + c + both_right + both_wrong, dtype=int)
    a_right = np.r_[np.ones(b), np.zeros(c), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    b_right = np.r_[np.zeros(b), np.ones(c), np.ones(both_right), np.zeros(both_wrong)].astype(bool)
    return y, np.where(a_right, 0, 1), np.where(b_right, 0, 2)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (5, 9), (12, 12), (20, 6), (31, 12), (4, 40)])
@pytest.mark.parametrize(("exact", "correction"), [(True, True), (False, True), (False, False)])
def test_mcnemar_matches_statsmodels(b: int, c: int, exact: bool, correction: bool) -> None:
    y, pred_a, pred_b = predictions_with_disagreements(b, c)
    ours = mcnemar_test(y, pred_a, pred_b, exact=exact, correction=correction)
    assert (ours["b"], ours["c"]) == (b, c)
    if b + c == 0:  # statsmodels' chi-square gives 0/0 = NaN; never disagreeing is p = 1
        assert ours["p_value"] == 1.0
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = sm_mcnemar([[7, b], [c, 3]], exact=exact, correction=correction)
    assert ours["statistic"] == pytest.approx(reference.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(reference.pvalue, rel=1e-12)


def test_mcnemar_chooses_exact_below_25_discordant_pairs() -> None:
    assert mcnemar_test(*predictions_with_disagreements(10, 14))["method"] == "exact binomial"
    assert mcnemar_test(*predictions_with_disagreements(10, 15))["method"].startswith("chi-square")
    assert mcnemar_test(*predictions_with_disagreements(10, 15), exact=True)["method"] == "exact binomial"
    with pytest.raises(InputError, match="pred_b"):
        mcnemar_test([0, 1], [0, 1], [0])
