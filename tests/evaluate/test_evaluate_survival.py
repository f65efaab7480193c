"""C-index (and its bootstrap), risk groups, Kaplan–Meier and log-rank against lifelines and hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_helpers import survival_sample
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test
from lifelines.utils import concordance_index

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.bootstrap import percentile_interval, stratified_bootstrap_indices
from vbiopsy.evaluate.survival import (
    bootstrap_concordance, bootstrap_concordance_samples, concordance, fit_risk_cutoffs, kaplan_meier_by_group,
    paired_concordance_difference, risk_groups,
)


@pytest.mark.parametrize("seed", range(3))
def test_concordance_matches_lifelines_with_negated_risk(seed: int) -> None:
    time, event, risk = survival_sample(80, seed)
    assert len(np.unique(time)) < 80 and len(np.unique(risk)) < 80  # ties in both
    c = concordance(time, event, risk)
    assert c == concordance_index(time, -risk, event)
    assert c > 0.55  # higher risk does shorten survival in this sample


def test_concordance_hand_cases() -> None:
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1])
    assert concordance(time, event, [4, 3, 2, 1]) == 1.0
    assert concordance(time, event, [1, 2, 3, 4]) == 0.0
    # comparable pairs (earlier death first): (1,2) (1,3) (1,4) (2,3) (2,4) → 5; risk [1, 1, 0, 0]:
    # (1,2) tie ½, (1,3) (1,4) (2,3) (2,4) concordant → 4.5 / 5
    assert concordance(time, event, [1, 1, 0, 0]) == pytest.approx(0.9)


def test_every_resample_c_index_equals_lifelines_on_that_resample() -> None:
    time, event, risk = survival_sample(40, 5)
    samples = bootstrap_concordance_samples(time, event, risk, n_resamples=40, seed=3)
    indices = stratified_bootstrap_indices(event, 40, seed=3)
    assert all(event[i].sum() == event.sum() for i in indices)  # stratified by event status
    reference = np.array([concordance_index(time[i], -risk[i], event[i]) for i in indices])
    np.testing.assert_allclose(samples, reference, rtol=0, atol=1e-14)
    assert samples.std() > 0.005


def test_bootstrap_and_paired_concordance() -> None:
    time, event, risk = survival_sample(60, 1)
    noisy = risk + np.random.default_rng(0).normal(0, 1.0, 60)
    estimate = bootstrap_concordance(time, event, risk, n_resamples=300, seed=2)
    samples = bootstrap_concordance_samples(time, event, risk, n_resamples=300, seed=2)
    assert (estimate.low, estimate.high) == tuple(float(v) for v in percentile_interval(samples, 0.95))
    assert estimate.low < estimate.c_index < estimate.high and estimate.events == int(event.sum())
    diff = paired_concordance_difference(time, event, risk, noisy, n_resamples=300, seed=2)
    other = bootstrap_concordance_samples(time, event, noisy, n_resamples=300, seed=2)
    assert (diff.low, diff.high) == tuple(float(v) for v in percentile_interval(samples - other, 0.95))
    assert diff.difference == pytest.approx(concordance(time, event, risk) - concordance(time, event, noisy))
    assert diff.to_dict()["metric"] == "c_index"


def test_risk_groups_median_split_and_training_cutoffs() -> None:
    risk = np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.7])
    assert risk_groups(risk).tolist() == [0, 0, 0, 1, 0, 1]  # median 0.5: equal to it → low group
    assert risk_groups(risk, cutoffs=[0.2]).tolist() == [0, 1, 1, 1, 1, 1]
    cutoffs = fit_risk_cutoffs(np.arange(9.0), n_groups=3)
    np.testing.assert_allclose(cutoffs, np.quantile(np.arange(9.0), [1 / 3, 2 / 3]))
    assert np.bincount(risk_groups(np.arange(9.0), n_groups=3)).tolist() == [3, 3, 3]
    assert risk_groups([1.0, 5.0, 9.0], cutoffs=cutoffs).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="strictly increasing"):
        risk_groups(risk, cutoffs=[0.5, 0.2])
    with pytest.raises(ConfigError, match="disagrees"):
        risk_groups(risk, n_groups=3, cutoffs=[0.5])
    with pytest.raises(ConfigError, match="n_groups"):
        risk_groups(risk, n_groups=1)


def product_limit(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan–Meier by hand: S(t) = Π (1 − d_i / n_i) over event times ≤ t, at 0 and every distinct time."""
    timeline = np.r_[0.0, np.unique(time)]
    survival, s = [], 1.0
    for t in timeline:
        deaths = np.sum((time == t) & (event == 1))
        at_risk = np.sum(time >= t)
        s *= 1.0 - deaths / at_risk if at_risk else 1.0
        survival.append(s)
    return timeline, np.array(survival)


@pytest.mark.parametrize("n_groups", [2, 3])
def test_kaplan_meier_by_group_matches_hand_product_limit_and_lifelines_logrank(n_groups: int) -> None:
    time, event, risk = survival_sample(90, 2)
    groups = risk_groups(risk, n_groups=n_groups)
    result = kaplan_meier_by_group(time, event, groups)
    assert sorted(result["groups"]) == [str(g) for g in range(n_groups)]
    for g in range(n_groups):
        members = groups == g
        curve = result["groups"][str(g)]
        timeline, survival = product_limit(time[members], event[members])
        np.testing.assert_allclose(curve["timeline"], timeline)
        np.testing.assert_allclose(curve["survival"], survival, atol=1e-12)
        assert (curve["ci_low"] <= curve["survival"] + 1e-12).all()
        assert (curve["ci_high"] >= curve["survival"] - 1e-12).all()
        assert (curve["n"], curve["events"]) == (int(members.sum()), int(event[members].sum()))
        reference = KaplanMeierFitter().fit(time[members], event[members]).median_survival_time_
        assert curve["median"] == (reference if np.isfinite(reference) else None)
    test = result["logrank"]
    reference = multivariate_logrank_test(time, groups, event)
    assert test["p_value"] == pytest.approx(reference.p_value, rel=1e-10)
    assert test["degrees_of_freedom"] == n_groups - 1
    if n_groups == 2:
        pairwise = logrank_test(time[groups == 0], time[groups == 1], event[groups == 0], event[groups == 1])
        assert test["test"] == "log-rank" and test["p_value"] == pytest.approx(pairwise.p_value, rel=1e-10)
    assert result["groups"]["0"]["survival"][-1] > result["groups"][str(n_groups - 1)]["survival"][-1]


def test_single_group_has_no_logrank_and_unreached_median_is_none() -> None:
    result = kaplan_meier_by_group([5.0, 6.0, 7.0, 8.0], [1, 0, 0, 0], np.zeros(4, dtype=int))
    assert result["logrank"] is None
    assert result["groups"]["0"]["median"] is None  # survival stops at 0.75
    assert result["groups"]["0"]["survival"][-1] == pytest.approx(0.75)


@pytest.mark.parametrize(("time", "event", "risk", "message"), [
    ([1.0, -2.0], [1, 0], [0.1, 0.2], "time: follow-up must be >= 0"),
    ([1.0, 2.0], [1, 2], [0.1, 0.2], "event: must be 0"),
    ([1.0, 2.0], [1, 0, 1], [0.1, 0.2], "event: has 3 values"),
    ([1.0, 2.0], [1, 0], [0.1], "risk: has 1 values"),
    ([1.0, 2.0], [1, 0], [0.1, np.inf], "risk: must be finite"),
    ([1.0, 2.0], [0, 0], [0.1, 0.2], "no comparable pair"),
])
def test_bad_survival_inputs_raise_input_error(time: list, event: list, risk: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        concordance(time, event, risk)


def test_kaplan_meier_rejects_mismatched_groups_and_bad_level() -> None:
    with pytest.raises(InputError, match="groups"):
        kaplan_meier_by_group([1.0, 2.0], [1, 0], [0])
    with pytest.raises(ConfigError, match="level"):
        kaplan_meier_by_group([1.0, 2.0], [1, 0], [0, 1], level=95)
