"""Tumour-type diagnosis (Virtual Biopsy §4.4–5) as a LightningModule around the Adaptive-Diagnoser.

Loss: cross-entropy with label smoothing ε = 0.05 (optional balanced class weights, applied as
in :func:`vbiopsy.tasks.losses.weighted_smoothed_cross_entropy`). Optimiser: AdamW (lr 5e-5,
weight decay 1e-4) with cosine annealing with warm restarts (T0 = 10 epochs, stepped once per
epoch). Optimisation is manual so that gradient accumulation (2 batches of 2) and the global
gradient-norm clip (2.0) hold whatever Trainer :func:`vbiopsy.train.fit.fit` builds: the loss of
each batch is divided by the accumulation count, and the optimiser steps every ``accumulate``
batches and at the end of the epoch.

Monitored score (``val_score``, early stopping and best epoch): the macro one-vs-rest AUC over the
classes present in the validation patients by default — on 20–40 patients balanced accuracy moves
in steps of several per cent and ties across many epochs, the AUC is smooth — or balanced accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vbiopsy.errors import ConfigError
from vbiopsy.tasks.validation import ValidationCollector
from vbiopsy.tasks.losses import weighted_smoothed_cross_entropy
from vbiopsy.train.diagnosis_config import DiagnosisOptimSettings, Monitor


def validation_score(target: np.ndarray, prob: np.ndarray, monitor: Monitor = "auc") -> float:
    """Macro one-vs-rest AUC over the classes present (0.5 with fewer than two), or balanced accuracy.

    Args:
        target: (n,) class indices.
        prob: (n, K) class probabilities.
    """
    from vbiopsy.evaluate.auc import present_class_scores, roc_auc
    from vbiopsy.evaluate.classification import classification_metrics

    if monitor not in ("auc", "balanced_accuracy"):
        raise ConfigError(f"monitor must be 'auc' or 'balanced_accuracy', got {monitor!r}")
    target = np.asarray(target).astype(int)
    if monitor == "balanced_accuracy":
        return float(classification_metrics(target, prob)["balanced_accuracy"])
    if len(np.unique(target)) < 2:
        return 0.5
    y, scores, _ = present_class_scores(target, np.asarray(prob, dtype=np.float64))
    return float(roc_auc(y, scores))


MODEL_INPUTS: tuple[str, ...] = ("image", "prior", "clinical", "crop")
"""The diagnoser's inputs, in the order of ``AdaptiveDiagnoser.forward``; a batch carries those the model takes."""


def model_inputs(batch: dict[str, Any]) -> dict[str, Tensor]:
    """The model's keyword inputs from a :class:`~vbiopsy.train.diagnosis_data.DiagnosisDataset` batch
    (image as float32; the optional ones only when present)."""
    named = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
    named["image"] = batch["image"].float()
    return named


class DiagnosisTask(ValidationCollector):
    """Training/validation logic around ``model(image[, prior][, clinical][, crop]) → logits (B, K)``.

    Args:
        model: the Adaptive-Diagnoser (or any module with that call).
        optim: optimiser, schedule, accumulation, clipping, smoothing and monitor settings.
        class_weight: (K,) loss weights by true class, or ``None``.
    """

    def __init__(self, model: nn.Module, *, optim: DiagnosisOptimSettings,
                 class_weight: np.ndarray | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optim, DiagnosisOptimSettings):
            raise ConfigError(f"optim must be DiagnosisOptimSettings, got {type(optim).__name__}")
        self.automatic_optimization = False
        self.model = model
        self.optim = optim
        self.task = "diagnosis"
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)
        self._epoch_losses: list[float] = []
        self.init_collector()

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Logits (B, K) of a dataset batch."""
        return self.model(**model_inputs(batch))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Smoothed (and optionally class-weighted) cross-entropy, float32 even under autocast."""
        return weighted_smoothed_cross_entropy(logits.float(), target, label_smoothing=self.optim.label_smoothing,
                                               class_weight=self.class_weight)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        loss = self.loss(self(batch), batch["target"])
        self.manual_backward(loss / self.optim.accumulate)
        self._epoch_losses.append(float(loss.detach()))
        last = batch_idx + 1 == self.trainer.num_training_batches
        if (batch_idx + 1) % self.optim.accumulate == 0 or last:
            if self.optim.grad_clip is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.optim.grad_clip, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()  # type: ignore[union-attr]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.collect(batch["target"], torch.softmax(self(batch).float(), dim=1))

    def on_validation_epoch_end(self) -> None:
        collected = self.take_collected()
        if collected is None:
            return
        train_loss = float(np.mean(self._epoch_losses)) if self._epoch_losses else None
        self._epoch_losses.clear()
        self.record_epoch(validation_score(*collected, self.optim.monitor), train_loss)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=self.optim.restart_epochs, T_mult=self.optim.restart_mult, eta_min=self.optim.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@torch.no_grad()
def predict_probabilities(model: nn.Module, dataset: Dataset, *, batch_size: int = 4) -> np.ndarray:
    """(n, K) softmax probabilities of ``model(**inputs)`` over ``dataset`` in order; eval, fp32."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray] = []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            logits = model(**model_inputs(batch))
            outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0))


def ensemble_probabilities(per_model: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of several models' (n, K) probabilities (a fold ensemble)."""
    if not per_model:
        raise ConfigError("ensemble_probabilities needs at least one model's probabilities")
    shapes = {p.shape for p in per_model}
    if len(shapes) != 1:
        raise ConfigError(f"models' probabilities differ in shape: {sorted(shapes)}")
    return np.mean(np.stack(per_model), axis=0)
