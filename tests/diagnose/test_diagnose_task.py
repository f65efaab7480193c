"""DiagnosisTask: loss, accumulation + clipping against a hand-written loop, warm restarts, monitored score."""

from __future__ import annotations

import copy
import math

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vbiopsy.errors import ConfigError
from vbiopsy.tasks.diagnose import DiagnosisTask, ensemble_probabilities, predict_probabilities, validation_score
from vbiopsy.train.diagnosis_config import DiagnosisOptimSettings


class PriorLinear(nn.Module):
    """logits = W · [mean(image), mean(image · prior)] + b: a model with the diagnoser's call."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 4)

    def forward(self, image: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        prior = torch.ones_like(image) if prior is None else prior
        return self.linear(torch.stack([image.mean((1, 2, 3, 4)), (image * prior).mean((1, 2, 3, 4))], 1) * 5)


class Items(Dataset):
    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.image = torch.randn(n, 1, 4, 4, 4, generator=g)
        self.prior = torch.rand(n, 1, 4, 4, 4, generator=g)
        self.target = torch.arange(n) % 4

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i], "prior": self.prior[i], "target": self.target[i]}


def _trainer(epochs: int, validate: bool = False) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=1.0 if validate else 0, accelerator="cpu",
                     num_sanity_val_steps=0)


def test_accumulation_and_global_clipping_match_a_plain_torch_loop() -> None:
    torch.manual_seed(0)
    optim = DiagnosisOptimSettings(lr=0.05, accumulate=2, grad_clip=0.3, label_smoothing=0.05, restart_epochs=10)
    model = PriorLinear()
    reference = copy.deepcopy(model)
    data = Items(10)  # batch 2 → 5 batches: steps after batches 2, 4 and 5 (the epoch's remainder)
    _trainer(1).fit(DiagnosisTask(model, optim=optim), DataLoader(data, batch_size=2))

    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=optim.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    batches = list(DataLoader(data, batch_size=2))
    for group in (batches[0:2], batches[2:4], batches[4:5]):
        optimizer.zero_grad()
        for batch in group:
            (loss_fn(reference(batch["image"], batch["prior"]), batch["target"]) / 2).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.3)
        optimizer.step()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_learning_rate_follows_cosine_warm_restarts_per_epoch() -> None:
    optim = DiagnosisOptimSettings(lr=1e-2, restart_epochs=3, min_lr=1e-4)
    task = DiagnosisTask(PriorLinear(), optim=optim)
    data = Items(4)
    _trainer(7, validate=True).fit(task, DataLoader(data, batch_size=2), DataLoader(data, batch_size=4))
    lrs = [row["lr"] for row in task.history]  # logged at validation, before the epoch-end step
    expected = [1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * (e % 3) / 3)) / 2 for e in range(7)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    assert [row["epoch"] for row in task.history] == list(range(7))


def test_monitored_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 3] * 5)
    prob = rng.dirichlet(np.ones(4), size=20)
    assert validation_score(y, prob, "auc") == pytest.approx(roc_auc_score(y, prob, multi_class="ovr"), abs=1e-12)
    assert validation_score(y, prob, "balanced_accuracy") == pytest.approx(
        balanced_accuracy_score(y, prob.argmax(1)), abs=1e-12)
    # a class absent from the validation patients: one-vs-rest AUC of the three present ones, averaged, on
    # probabilities renormalised over them (vbiopsy.evaluate.auc.present_class_scores)
    present = y != 2
    kept = prob[present][:, [0, 1, 3]] / prob[present][:, [0, 1, 3]].sum(1, keepdims=True)
    expected = np.mean([roc_auc_score(y[present] == c, kept[:, i]) for i, c in enumerate((0, 1, 3))])
    assert validation_score(y[present], prob[present], "auc") == pytest.approx(expected, abs=1e-12)
    assert validation_score(np.zeros(5, int), prob[:5], "auc") == 0.5
    with pytest.raises(ConfigError, match="monitor"):
        validation_score(y, prob, "f1")  # type: ignore[arg-type]


def test_loss_is_smoothed_cross_entropy_and_predictions_are_distributions() -> None:
    torch.manual_seed(1)
    task = DiagnosisTask(PriorLinear(), optim=DiagnosisOptimSettings(label_smoothing=0.05))
    batch = Items(6)[0]
    logits = torch.randn(6, 4)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = nn.CrossEntropyLoss(label_smoothing=0.05)(logits, target)
    torch.testing.assert_close(task.loss(logits, target), expected)
    prob = predict_probabilities(task.model, Items(6), batch_size=4)
    assert prob.shape == (6, 4) and np.allclose(prob.sum(1), 1.0, atol=1e-6) and batch["image"].shape == (1, 4, 4, 4)
    np.testing.assert_allclose(ensemble_probabilities([prob, prob[::-1]]), (prob + prob[::-1]) / 2)
    with pytest.raises(ConfigError, match="optim"):
        DiagnosisTask(PriorLinear(), optim={"lr": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size"):
        predict_probabilities(task.model, Items(2), batch_size=0)
    with pytest.raises(ConfigError, match="shape"):
        ensemble_probabilities([prob, prob[:3]])
