"""ASLNet tasks as one LightningModule: grade (3 classes), survival (binary 12 months), survival_cox.

The module glues a plain ``nn.Module`` to its loss, optimiser, schedule and monitored metric:

- ``grade``: cross-entropy with label smoothing and per-sample class weights applied the Keras
  way (weight × sample loss, plain mean — PyTorch's ``weight=`` cancels it at batch size 1);
  monitored by the macro one-vs-rest AUC.
- ``survival``: binary cross-entropy on one logit (positive = died within the horizon); AUC.
- ``survival_cox``: Cox partial likelihood on a risk score (every patient, censored included);
  monitored by Harrell's C-index.

AdamW (ε 1e-7 as Keras) with ReduceLROnPlateau on the monitored score (mode max, absolute
threshold 1e-4); optional per-parameter gradient-norm clipping (Keras ``clipnorm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vbiopsy.tasks.losses import binary_cross_entropy, cox_partial_likelihood, weighted_smoothed_cross_entropy
from vbiopsy.tasks.validation import MONITOR, ValidationCollector
from vbiopsy.train.config import OptimSettings, Task



def probabilities(task: Task, logits: Tensor) -> Tensor:
    """Model outputs → what is stored per patient: class probabilities (grade), P(positive) (survival),
    risk score (survival_cox)."""
    if task == "grade":
        return torch.softmax(logits.float(), dim=1)
    if task == "survival":
        return torch.sigmoid(logits.float().reshape(-1))
    return logits.float().reshape(-1)


def validation_score(task: Task, target: np.ndarray, output: np.ndarray) -> float:
    """Monitored metric: macro one-vs-rest AUC (grade; over the classes present, see
    :func:`vbiopsy.evaluate.auc.present_class_scores`), AUC (survival), C-index (cox); 0.5 when
    undefined (a fold without both outcomes)."""
    from vbiopsy.evaluate.auc import present_class_scores, roc_auc

    if task == "survival_cox":
        from vbiopsy.evaluate.survival import concordance

        time, event = target[:, 0], target[:, 1]
        if event.sum() == 0:
            return 0.5
        return float(concordance(time, event, output))
    if len(np.unique(target)) < 2:
        return 0.5
    y, scores, _ = present_class_scores(target.astype(int), output)
    return float(roc_auc(y, scores))


class AslNetTask(ValidationCollector):
    """Training/validation logic around ``model`` (``model(image)`` or ``model(image, tabular)`` → logits)."""

    def __init__(self, model: nn.Module, *, task: Task, optim: OptimSettings,
                 class_weight: np.ndarray | None = None, uses_tabular: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.optim = optim
        self.uses_tabular = uses_tabular
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)
        self.init_collector()

    def forward(self, image: Tensor, tabular: Tensor | None = None) -> Tensor:
        return self.model(image, tabular) if self.uses_tabular else self.model(image)

    def _logits(self, batch: dict[str, Any]) -> Tensor:
        return self(batch["image"], batch.get("tabular"))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """The task's loss for a batch (float32 even under bf16 autocast)."""
        logits = logits.float()
        if self.task == "grade":
            return weighted_smoothed_cross_entropy(logits, target, label_smoothing=self.optim.label_smoothing,
                                                   class_weight=self.class_weight)
        if self.task == "survival":
            return binary_cross_entropy(logits.reshape(-1), target.float(), label_smoothing=self.optim.label_smoothing,
                                        class_weight=self.class_weight)
        return cox_partial_likelihood(logits.reshape(-1), target[:, 0], target[:, 1])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.loss(self._logits(batch), batch["target"])
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.collect(batch["target"], probabilities(self.task, self._logits(batch)))

    def on_validation_epoch_end(self) -> None:
        collected = self.take_collected()
        if collected is None:
            return
        train_loss = self.trainer.callback_metrics.get("train_loss")
        self.record_epoch(validation_score(self.task, *collected), None if train_loss is None else float(train_loss))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay,
                                      eps=1e-7, betas=(0.9, 0.999))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=self.optim.lr_plateau_patience, min_lr=self.optim.min_lr,
            threshold=1e-4, threshold_mode="abs")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip each parameter's gradient norm separately (Keras ``clipnorm``), when configured."""
        if self.optim.grad_clip is None:
            return
        for parameter in self.parameters():
            if parameter.grad is not None:
                torch.nn.utils.clip_grad_norm_([parameter], self.optim.grad_clip)
