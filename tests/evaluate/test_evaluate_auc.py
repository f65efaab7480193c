"""AUC, stratified bootstrap, paired difference and ROC band against scikit-learn, scipy and exact arithmetic."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import numpy as np
import pytest
from evaluate_helpers import binary_predictions, multiclass_predictions
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate import bootstrap as bootstrap_module
from vbiopsy.evaluate.auc import (
    bootstrap_auc, bootstrap_auc_samples, paired_bootstrap_difference, roc_auc, roc_curve_band,
)
from vbiopsy.evaluate.bootstrap import percentile_interval, stratified_bootstrap_indices


def sklearn_auc(y: np.ndarray, prob: np.ndarray) -> float:
    return float(roc_auc_score(y, prob, multi_class="ovr", average="macro") if prob.ndim == 2
                 else roc_auc_score(y, prob))


def exact_binary_auc(y: np.ndarray, prob: np.ndarray) -> Fraction:
    """AUC as an exact fraction by comparing every positive with every negative (ties ½)."""
    credit = sum(Fraction(1) if p > q else Fraction(1, 2) if p == q else Fraction(0)
                 for p, q in product(prob[y == 1], prob[y == 0]))
    return credit / (int((y == 1).sum()) * int((y == 0).sum()))


@pytest.mark.parametrize("seed", range(4))
def test_binary_auc_is_the_exact_rational_rounded_once_and_matches_sklearn(seed: int) -> None:
    y, prob = binary_predictions(60, seed, decimals=1)  # decimals=1: heavy ties
    ours = roc_auc(y, prob)
    assert ours == float(exact_binary_auc(y, prob))
    assert ours == pytest.approx(sklearn_auc(y, prob), abs=1e-14)


@pytest.mark.parametrize(("k", "seed"), [(3, 0), (3, 1), (4, 2), (5, 3)])
def test_macro_ovr_auc_matches_sklearn(k: int, seed: int) -> None:
    y, prob = multiclass_predictions(80, k, seed)
    assert roc_auc(y, prob) == pytest.approx(sklearn_auc(y, prob), abs=1e-14)


def test_two_column_and_float32_probabilities_give_the_binary_auc() -> None:
    y, prob = binary_predictions(40, 5, decimals=2)
    assert roc_auc(y, np.column_stack([1 - prob, prob])) == roc_auc(y, prob)
    p32 = prob.astype(np.float32)
    assert roc_auc(y, p32) == pytest.approx(roc_auc_score(y, p32), abs=1e-14)


def test_stratified_indices_keep_class_sizes_and_are_seeded() -> None:
    y, _ = multiclass_predictions(50, 3, 0)
    idx = stratified_bootstrap_indices(y, 300, seed=7)
    assert idx.shape == (300, 50)
    expected = np.bincount(y)
    assert all((np.bincount(y[row], minlength=3) == expected).all() for row in idx)
    assert np.array_equal(idx, stratified_bootstrap_indices(y, 300, seed=7))
    assert not np.array_equal(idx, stratified_bootstrap_indices(y, 300, seed=8))
    # it is a real resample: patients repeat and some are left out
    assert all(np.unique(row).size < 50 for row in idx[:20])


@pytest.mark.parametrize("multiclass", [False, True])
def test_every_resample_auc_equals_sklearn_on_that_resample(multiclass: bool) -> None:
    y, prob = multiclass_predictions(45, 3, 4) if multiclass else binary_predictions(45, 4, decimals=1)
    samples = bootstrap_auc_samples(y, prob, n_resamples=60, seed=11)
    indices = stratified_bootstrap_indices(y, 60, seed=11)
    reference = np.array([sklearn_auc(y[i], prob[i]) for i in indices])
    np.testing.assert_allclose(samples, reference, rtol=0, atol=1e-14)
    assert samples.std() > 0.01  # the resamples do differ


def test_resamples_split_into_many_chunks_are_still_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap_module, "CHUNK_ELEMENTS", 100)  # 2 resamples per chunk at n = 45
    y, prob = multiclass_predictions(45, 3, 2)
    samples = bootstrap_auc_samples(y, prob, n_resamples=25, seed=4)
    indices = stratified_bootstrap_indices(y, 25, seed=4)
    np.testing.assert_allclose(samples, [sklearn_auc(y[i], prob[i]) for i in indices], rtol=0, atol=1e-14)


def _scipy_stratified_ci(y: np.ndarray, prob: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    """Percentile CI from scipy.stats.bootstrap: one sample per class (resampled independently = stratified),
    statistic = macro OvR Mann–Whitney U / (n₊ n₋) from scipy.stats.mannwhitneyu (vectorised)."""
    k = 2 if prob.ndim == 1 else prob.shape[1]
    scores = np.column_stack([1 - prob, prob]) if prob.ndim == 1 else prob
    members = [np.flatnonzero(y == c) for c in range(k)]

    def statistic(*index_samples: np.ndarray, axis: int = -1) -> np.ndarray:
        per_class = []
        for c in (range(1, 2) if k == 2 else range(k)):
            positives = scores[members[c][index_samples[c]], c]
            negatives = np.concatenate([scores[members[j][index_samples[j]], c] for j in range(k) if j != c], axis=-1)
            u = stats.mannwhitneyu(positives, negatives, axis=-1).statistic
            per_class.append(u / (positives.shape[-1] * negatives.shape[-1]))
        return np.mean(per_class, axis=0)

    data = tuple(np.arange(m.size) for m in members)
    result = stats.bootstrap(data, statistic, n_resamples=n_resamples, method="percentile", vectorized=True,
                             paired=False, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@pytest.mark.parametrize("multiclass", [False, True])
def test_ci_agrees_with_scipy_bootstrap_within_monte_carlo_error(multiclass: bool) -> None:
    y, prob = multiclass_predictions(100, 3, 9) if multiclass else binary_predictions(100, 9, decimals=2)
    ours = bootstrap_auc(y, prob, n_resamples=2000, seed=0)
    low, high = _scipy_stratified_ci(y, prob, 2000, seed=123)  # another random stream
    assert ours.low < ours.auc < ours.high
    assert abs(ours.low - low) < 0.02 and abs(ours.high - high) < 0.02
    assert ours.high - ours.low > 0.05  # a real interval, not a point
    assert (ours.n, ours.n_resamples, ours.level) == (100, 2000, 0.95)
    assert ours.average == ("macro one-vs-rest" if multiclass else "binary")
    assert ours.to_dict()["auc"] == ours.auc


def test_ci_equals_scipy_bootstrap_with_the_same_seed() -> None:
    """scipy draws each sample's indices as one ``integers(0, n_c, (B, n_c))`` call, class after class, as we
    do for n·B below one chunk: with the same seed the resamples coincide and so must the intervals. (Should
    a future scipy change its draw order, this fails while the Monte-Carlo test above still holds.)"""
    y, prob = multiclass_predictions(100, 3, 9)
    ours = bootstrap_auc(y, prob, n_resamples=2000, seed=123)
    low, high = _scipy_stratified_ci(y, prob, 2000, seed=123)
    assert ours.low == pytest.approx(low, abs=1e-12) and ours.high == pytest.approx(high, abs=1e-12)


def test_bootstrap_interval_is_the_percentile_interval_of_the_samples() -> None:
    y, prob = binary_predictions(70, 2)
    estimate = bootstrap_auc(y, prob, n_resamples=500, seed=3, level=0.9)
    samples = bootstrap_auc_samples(y, prob, n_resamples=500, seed=3)
    assert (estimate.low, estimate.high) == tuple(np.quantile(samples, [0.05, 0.95]))
    assert estimate.auc == roc_auc(y, prob)


def test_paired_difference_uses_the_same_resamples() -> None:
    y, prob_a = binary_predictions(80, 1, decimals=2)
    prob_b = np.clip(prob_a + np.random.default_rng(0).normal(0, 0.15, 80), 0, 1)
    diff = paired_bootstrap_difference(y, prob_a, prob_b, n_resamples=400, seed=5)
    samples = (bootstrap_auc_samples(y, prob_a, n_resamples=400, seed=5)
               - bootstrap_auc_samples(y, prob_b, n_resamples=400, seed=5))
    assert (diff.low, diff.high) == tuple(float(v) for v in percentile_interval(samples, 0.95))
    assert diff.difference == pytest.approx(sklearn_auc(y, prob_a) - sklearn_auc(y, prob_b), abs=1e-14)
    assert (diff.a, diff.b) == (roc_auc(y, prob_a), roc_auc(y, prob_b))
    same = paired_bootstrap_difference(y, prob_a, prob_a, n_resamples=100)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_difference_rejects_other_metrics_and_mismatched_models() -> None:
    y, prob = multiclass_predictions(30, 3, 0)
    with pytest.raises(ConfigError, match="metric"):
        paired_bootstrap_difference(y, prob, prob, metric="f1")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="prob_b: has 2 classes but prob_a has 3"):
        paired_bootstrap_difference(y, prob, prob[:, :2] / prob[:, :2].sum(1, keepdims=True))


def polyline_tpr(y: np.ndarray, score: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Reference: sklearn's full ROC polyline read at each grid FPR, one point at a time; where the
    grid FPR is a vertex FPR (a vertical run) the top of the run is taken."""
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    out = []
    for f in grid:
        at = np.isclose(fpr, f, rtol=0, atol=1e-12)
        if at.any():
            out.append(tpr[at].max())
            continue
        lo = np.flatnonzero(fpr < f)[-1]
        out.append(tpr[lo] + (f - fpr[lo]) / (fpr[lo + 1] - fpr[lo]) * (tpr[lo + 1] - tpr[lo]))
    return np.array(out)


def reference_macro_tpr(y: np.ndarray, prob: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if prob.ndim == 1:
        return polyline_tpr(y, prob, grid)
    return np.mean([polyline_tpr(y == k, prob[:, k], grid) for k in range(prob.shape[1])], axis=0)


@pytest.mark.parametrize("multiclass", [False, True])
def test_roc_band_matches_sklearn_curves_on_every_resample(multiclass: bool) -> None:
    y, prob = multiclass_predictions(40, 3, 6) if multiclass else binary_predictions(40, 6, decimals=1)
    negatives = [int((y != k).sum()) for k in np.unique(y)]  # grid includes every vertex FPR (vertical runs)
    grid = np.unique(np.concatenate([np.linspace(0, 1, 41), *[np.arange(m + 1) / m for m in negatives]]))
    band = roc_curve_band(y, prob, fpr_grid=grid, n_resamples=120, seed=2, level=0.8)
    np.testing.assert_allclose(band.tpr, reference_macro_tpr(y, prob, grid), atol=1e-12)
    curves = np.array([reference_macro_tpr(y[i], prob[i], grid)
                       for i in stratified_bootstrap_indices(y, 120, seed=2)])
    low, high = np.quantile(curves, [0.1, 0.9], axis=0)
    np.testing.assert_allclose(band.low, low, atol=1e-12)
    np.testing.assert_allclose(band.high, high, atol=1e-12)
    assert band.auc == bootstrap_auc(y, prob, n_resamples=120, seed=2, level=0.8)
    assert (band.high >= band.low).all() and band.tpr[-1] == 1.0
    assert len(band.to_dict()["fpr"]) == grid.size


def test_default_grid_is_percent_steps() -> None:
    y, prob = binary_predictions(30, 0)
    band = roc_curve_band(y, prob, n_resamples=20)
    np.testing.assert_allclose(band.fpr, np.arange(101) / 100)


def test_missing_class_is_named() -> None:
    y, prob = multiclass_predictions(30, 3, 1)
    keep = y != 1
    y_missing = y[keep]
    prob_missing = prob[keep]
    for call in (lambda: roc_auc(y_missing, prob_missing), lambda: bootstrap_auc(y_missing, prob_missing),
                 lambda: roc_curve_band(y_missing, prob_missing)):
        with pytest.raises(InputError, match="class 1 has no sample"):
            call()
    with pytest.raises(InputError, match="class 1 has no sample"):
        roc_auc(np.zeros(5, dtype=int), np.full(5, 0.3))


@pytest.mark.parametrize(("y", "prob", "message"), [
    ([0, 1, 1], [0.2, 0.7], "2 rows but y has 3"),
    ([0, 1, 1], [0.2, np.nan, 0.3], "finite"),
    ([0, 1, 1], [0.2, 1.2, 0.3], "in \\[0, 1\\]"),
    ([0, 1, 0.5], [0.2, 0.4, 0.3], "integers"),
    ([0, 1, -1], [0.2, 0.4, 0.3], "integers >= 0"),
    ([0, 1, 2], [0.2, 0.4, 0.3], "labels must be in 0..1"),
    ([0, 1, 2], [[0.2, 0.4, 0.3], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]], "row 0 sums to 0.9"),
    ([0, 1], [[[0.5]], [[0.5]]], "shape"),
])
def test_bad_inputs_raise_input_error_naming_the_value(y: list, prob: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        roc_auc(y, prob)


@pytest.mark.parametrize("options", [{"n_resamples": 0}, {"n_resamples": 2.5}, {"seed": -1}, {"level": 1.0},
                                     {"level": 0}])
def test_bad_bootstrap_options_raise_config_error(options: dict) -> None:
    y, prob = binary_predictions(20, 0)
    with pytest.raises(ConfigError):
        bootstrap_auc(y, prob, **options)


@pytest.mark.parametrize("grid", [[0.5], [0.2, 0.1], [-0.1, 0.5], [0.0, np.nan]])
def test_bad_fpr_grid_raises_config_error(grid: list) -> None:
    y, prob = binary_predictions(20, 0)
    with pytest.raises(ConfigError, match="fpr_grid"):
        roc_curve_band(y, prob, fpr_grid=grid, n_resamples=10)


def test_present_class_scores_drop_an_absent_class_and_say_so() -> None:
    from vbiopsy.evaluate.auc import present_class_scores

    rng = np.random.default_rng(5)
    prob = rng.dirichlet(np.ones(3), size=30)
    full = np.arange(30) % 3
    y, scores, average = present_class_scores(full, prob)
    assert average == "macro one-vs-rest" and scores is prob
    without_1 = np.where(full == 1, 2, full)  # class 1 absent
    y, scores, average = present_class_scores(without_1, prob, ["II", "III", "IV"])
    assert "III absent" in average and "binary between II, IV" in average
    expected = prob[:, 2] / (prob[:, 0] + prob[:, 2])
    np.testing.assert_allclose(scores, expected)
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(without_1 == 2, expected))
