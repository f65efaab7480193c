"""Losses against hand computations, PyTorch, lifelines (Cox, no ties), statsmodels (Breslow ties), sklearn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.losses import binary_cross_entropy, class_weights, cox_partial_likelihood, \
    weighted_smoothed_cross_entropy


def test_weighted_ce_equals_hand_computation() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    target = torch.tensor([0, 2])
    weight = torch.tensor([2.0, 1.0, 0.5])
    eps = 0.1
    expected = 0.0
    for row, y in zip(logits.tolist(), target.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        soft = [(1 - eps) * (k == y) + eps / 3 for k in range(3)]
        expected += weight[y].item() * -sum(s * (v - log_z) for s, v in zip(soft, row))
    loss = weighted_smoothed_cross_entropy(logits, target, label_smoothing=eps, class_weight=weight)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)


def test_weight_matters_at_batch_size_one_unlike_torch() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(1, 3), torch.tensor([1])
    weight = torch.tensor([1.0, 3.0, 1.0])
    plain = weighted_smoothed_cross_entropy(logits, target)
    ours = weighted_smoothed_cross_entropy(logits, target, class_weight=weight)
    torch_weighted = nn.CrossEntropyLoss(weight=weight)(logits, target)
    assert ours.item() == pytest.approx(3.0 * plain.item(), rel=1e-6)
    assert torch_weighted.item() == pytest.approx(plain.item(), rel=1e-6)  # PyTorch cancels it


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3])
def test_unweighted_ce_equals_torch(eps: float) -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 4, (7,))
    ours = weighted_smoothed_cross_entropy(logits, target, label_smoothing=eps)
    ref = nn.CrossEntropyLoss(label_smoothing=eps)(logits, target)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


def test_binary_ce_against_torch_and_keras_smoothing() -> None:
    torch.manual_seed(2)
    logits, target = torch.randn(6, 1, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    ref = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target.double())
    assert binary_cross_entropy(logits, target).item() == pytest.approx(ref.item(), rel=1e-12)
    pos = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target.double(),
                                                         pos_weight=torch.tensor(2.5, dtype=torch.float64))
    assert binary_cross_entropy(logits, target, pos_weight=2.5).item() == pytest.approx(pos.item(), rel=1e-12)
    p = torch.sigmoid(logits[:, 0])
    soft = target.double() * 0.8 + 0.1  # Keras: y·(1 − ε) + ε/2 with ε = 0.2
    w = torch.tensor([1.0, 4.0], dtype=torch.float64)[target]
    by_hand = (w * -(soft * p.log() + (1 - soft) * (1 - p).log())).mean()
    ours = binary_cross_entropy(logits[:, 0], target.double(), label_smoothing=0.2,
                                class_weight=torch.tensor([1.0, 4.0]))
    assert ours.item() == pytest.approx(by_hand.item(), rel=1e-9)


def test_cox_equals_lifelines_without_ties() -> None:
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    time = rng.exponential(np.exp(-x @ np.array([0.8, -0.5])))
    event = (rng.random(40) < 0.7).astype(float)
    assert len(np.unique(time)) == 40
    fitter = CoxPHFitter().fit(pd.DataFrame(x, columns=["a", "b"]).assign(t=time, e=event), "t", "e")
    risk = torch.from_numpy(x @ fitter.params_[["a", "b"]].to_numpy())
    loss = cox_partial_likelihood(risk, torch.from_numpy(time), torch.from_numpy(event))
    assert -loss.item() * event.sum() == pytest.approx(fitter.log_likelihood_, rel=1e-9)


def test_cox_breslow_ties_by_hand_and_statsmodels() -> None:
    from statsmodels.duration.hazard_regression import PHReg

    risk = torch.tensor([0.3, -0.2, 1.1, 0.5], dtype=torch.float64)
    time = torch.tensor([1.0, 1.0, 2.0, 3.0])
    event = torch.tensor([1, 1, 0, 1])
    # deaths at t=1 (tied) both see all four patients; the death at t=3 sees only itself
    everyone = math.log(sum(math.exp(r) for r in risk.tolist()))
    by_hand = -((0.3 - everyone) + (-0.2 - everyone) + (0.5 - 0.5)) / 3
    loss = cox_partial_likelihood(risk, time, event)
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    model = PHReg(time.numpy(), risk.numpy()[:, None], status=event.numpy(), ties="breslow")
    assert -loss.item() * 3 == pytest.approx(model.loglike(np.array([1.0])), rel=1e-10)


def test_cox_order_invariance_gradient_and_no_events() -> None:
    torch.manual_seed(3)
    risk = torch.randn(9, dtype=torch.float64, requires_grad=True)
    time = torch.tensor([5.0, 2, 2, 7, 1, 3, 3, 3, 9], dtype=torch.float64)
    event = torch.tensor([1, 0, 1, 1, 1, 0, 1, 1, 0])
    perm = torch.randperm(9)
    a = cox_partial_likelihood(risk, time, event)
    b = cox_partial_likelihood(risk[perm], time[perm], event[perm])
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda r: cox_partial_likelihood(r, time, event), (risk,))
    none = cox_partial_likelihood(risk, time, torch.zeros(9))
    none.backward()
    assert none.item() == 0.0 and risk.grad is not None and torch.all(risk.grad == 0)


def test_class_weights_against_sklearn() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 1, 2, 2, 2, 2, 2, 2])
    np.testing.assert_allclose(class_weights(y, 3), compute_class_weight("balanced", classes=np.arange(3), y=y))
    absent = class_weights(np.array([0, 0, 2]), 3)
    np.testing.assert_allclose(absent, [3 / 6, 0.0, 3 / 3])
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        class_weights(np.array([0, 3]), 3)
    with pytest.raises(ConfigError, match="n_classes"):
        class_weights(y, 1)


def test_loss_argument_validation() -> None:
    logits = torch.zeros(2, 3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        weighted_smoothed_cross_entropy(logits, torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="label_smoothing"):
        weighted_smoothed_cross_entropy(logits, torch.tensor([0, 1]), label_smoothing=1.0)
    with pytest.raises(ConfigError, match=r"\(3,\)"):
        weighted_smoothed_cross_entropy(logits, torch.tensor([0, 1]), class_weight=torch.ones(2))
    with pytest.raises(InputError, match="time"):
        cox_partial_likelihood(torch.zeros(3), torch.tensor([1.0, -1.0, 2.0]), torch.ones(3))
    with pytest.raises(InputError, match="logits"):
        binary_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]))
