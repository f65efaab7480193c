"""Net benefit against dcurves.dca (the reference library) and a hand-counted case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dcurves import dca
from evaluate_helpers import binary_predictions

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.decision import net_benefit


@pytest.mark.parametrize(("seed", "decimals"), [(0, 2), (1, None)])
def test_net_benefit_matches_dcurves_on_the_reference_thresholds(seed: int, decimals: int | None) -> None:
    y, prob = binary_predictions(120, seed, decimals=decimals)  # decimals=2: scores equal to thresholds
    curve = net_benefit(y, prob)
    thresholds = np.arange(1, 100) / 100
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    table = dca(data=pd.DataFrame({"event": y, "model": prob}), outcome="event", modelnames=["model"],
                thresholds=thresholds)
    for ours, name in ((curve.model, "model"), (curve.treat_all, "all"), (curve.treat_none, "none")):
        reference = table[table["model"] == name].sort_values("threshold")["net_benefit"].to_numpy()
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-14)
    assert curve.prevalence == pytest.approx(y.mean()) and curve.n == 120


def test_net_benefit_hand_counted() -> None:
    y = np.array([1, 1, 0, 0, 0])
    prob = np.array([0.9, 0.4, 0.4, 0.2, 0.1])
    curve = net_benefit(y, prob, thresholds=[0.25, 0.4, 0.5])
    # pt = 0.25: treat 3 (TP 2, FP 1): 2/5 − 1/5·(1/3); pt = 0.4: p >= 0.4 → same 3; pt = 0.5: TP 1, FP 0
    np.testing.assert_allclose(curve.model, [0.4 - 0.2 / 3, 0.4 - 0.2 * 0.4 / 0.6, 0.2])
    np.testing.assert_allclose(curve.treat_all, [0.4 - 0.6 / 3, 0.4 - 0.6 * 0.4 / 0.6, 0.4 - 0.6])
    assert (curve.treat_none == 0).all()
    assert curve.to_dict()["thresholds"] == [0.25, 0.4, 0.5]


@pytest.mark.parametrize("thresholds", [[0.0, 0.5], [0.5, 1.0], [np.nan], []])
def test_thresholds_must_lie_strictly_inside_0_1(thresholds: list) -> None:
    with pytest.raises(ConfigError, match="thresholds"):
        net_benefit([0, 1], [0.2, 0.8], thresholds=thresholds)


def test_net_benefit_needs_a_binary_problem() -> None:
    with pytest.raises(InputError, match="binary"):
        net_benefit([0, 1, 2], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    with pytest.raises(InputError, match="class 0 has no sample"):
        net_benefit([1, 1], [0.2, 0.8])
