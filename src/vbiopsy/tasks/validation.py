"""What the classification tasks share at validation: collect each batch's targets and outputs, score the
epoch once, log the monitored score and keep one history row per validated epoch.

Lightning's ``validation_step`` runs per batch, but AUC-type scores are only defined over the whole
validation set, so outputs are gathered on the CPU and scored in ``on_validation_epoch_end``.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch import Tensor

MONITOR = "val_score"
"""The key the best-epoch checkpointing and early stopping watch."""


class ValidationCollector(L.LightningModule):
    """A LightningModule base: :meth:`collect` per validation batch, :meth:`take_collected` and
    :meth:`record_epoch` at the epoch's end (subclasses call :meth:`init_collector` in ``__init__``)."""

    history: list[dict[str, float]]

    def init_collector(self) -> None:
        """Empty buffers and history."""
        self._val_targets: list[Tensor] = []
        self._val_outputs: list[Tensor] = []
        self.history = []

    def collect(self, target: Tensor, output: Tensor) -> None:
        """Keep one batch's targets and outputs (detached, on the CPU)."""
        self._val_targets.append(target.detach().cpu())
        self._val_outputs.append(output.detach().cpu())

    def take_collected(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(targets, outputs) of the epoch, buffers emptied; None when no batch was collected."""
        if not self._val_targets:
            return None
        target = torch.cat(self._val_targets).numpy()
        output = torch.cat(self._val_outputs).numpy()
        self._val_targets.clear()
        self._val_outputs.clear()
        return target, output

    def record_epoch(self, score: float, train_loss: float | None) -> None:
        """Log ``score`` as :data:`MONITOR` and append ``{epoch, val_score, train_loss, lr}`` to the history."""
        self.log(MONITOR, score, prog_bar=False)
        lr = float(self.optimizers().param_groups[0]["lr"]) if self.trainer.optimizers else math.nan  # type: ignore[union-attr]
        self.history.append({"epoch": int(self.current_epoch), MONITOR: round(score, 6),
                             "train_loss": round(float(train_loss), 6) if train_loss is not None else math.nan,
                             "lr": lr})
