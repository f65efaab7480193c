"""MGMT-Net as a LightningModule: tumour sub-region segmentation + IDH / 1p/19q / TERT (task ``profile``).

Loss = Dice + cross-entropy (MONAI ``DiceCELoss``, softmax, Dice over the tumour classes with the
batch pooled so a patch without tumour does not explode the Dice term; deep-supervision outputs
added with halving weights) + ``marker_weight`` × the masked marker loss (BCE with label
smoothing, class-balanced positive weights, optional focal; unknown labels left out, and so are the labels
of training patches holding too little of the tumour when ``loss.marker_min_tumour_share`` > 0:
:mod:`vbiopsy.train.profile_patches`).

Validation runs whole-volume sliding-window inference on the validation patients (every
``validate_every`` epochs) and logs ``val_score`` = mean whole-tumour Dice, averaged with the mean
marker AUC over the markers whose validation labels have both classes. The history also gets
``val_wt_volume_ratio``: the mean predicted / reference whole-tumour volume over the validation
patients with a tumour (≫ 1: healthy brain labelled tumour). AdamW with a cosine
schedule (optional linear warm-up), as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.losses import masked_marker_loss
from vbiopsy.train.profile_config import ProfileConfig

MONITOR = "val_score"


WHOLE_TUMOUR_LABELS = (1, 2, 3)
"""BraTS 2024 labels of the whole tumour (NETC, SNFH, ET; the resection cavity is not tumour)."""


def whole_tumour_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of the whole tumour (labels 1–3) of two label maps; 1 when both are empty."""
    a = np.isin(pred, WHOLE_TUMOUR_LABELS)
    b = np.isin(ref, WHOLE_TUMOUR_LABELS)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def whole_tumour_volume_ratio(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """Predicted / reference whole-tumour volume of two label maps on one grid; ``None`` when the
    reference has no tumour. A sanity figure beside the Dice: ≫ 1 is a model that labels healthy
    brain as tumour, ≪ 1 one that misses it, though both can have the same low Dice."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise InputError("prediction", f"label map shape {pred.shape} differs from the reference {ref.shape}")
    reference = int(np.isin(ref, WHOLE_TUMOUR_LABELS).sum())
    return None if reference == 0 else int(np.isin(pred, WHOLE_TUMOUR_LABELS).sum()) / reference


def mean_defined(values: Sequence[float | None]) -> float:
    """Mean of the values that are not ``None``; NaN when there is none."""
    defined = [float(v) for v in values if v is not None]
    return float(np.mean(defined)) if defined else math.nan


def marker_auc(markers: np.ndarray, prob: np.ndarray) -> list[float | None]:
    """AUC per marker over the patients whose label is known; ``None`` without both classes."""
    from vbiopsy.evaluate.auc import roc_auc

    out: list[float | None] = []
    for k in range(markers.shape[1]):
        known = np.isfinite(markers[:, k])
        y = markers[known, k].astype(int)
        out.append(float(roc_auc(y, prob[known, k])) if len(np.unique(y)) == 2 else None)
    return out


def validation_score(wt_dice: Sequence[float], aucs: Sequence[float | None], monitor: str = "combined") -> float:
    """Mean WT Dice, averaged with the mean of the defined marker AUCs (when any) for ``monitor="combined"``;
    the WT Dice alone for ``monitor="wt_dice"``."""
    if monitor not in ("combined", "wt_dice"):
        raise ConfigError(f"monitor must be 'combined' or 'wt_dice', got {monitor!r}")
    dice = float(np.mean(wt_dice)) if len(wt_dice) else 0.0
    defined = [a for a in aucs if a is not None]
    return dice if monitor == "wt_dice" or not defined else 0.5 * (dice + float(np.mean(defined)))


class ProfileTask(L.LightningModule):
    """Training logic around an :class:`~vbiopsy.models.mgmtnet.MGMTNet`.

    Args:
        model: the network.
        config: the run's config (loss, optimiser, inference settings).
        pos_weight: (K,) positive-class weight per marker from the training fold, or ``None``.
        val_cases: :class:`~vbiopsy.train.profile_data.ProfileCase` list for whole-volume validation.
    """

    def __init__(self, model: nn.Module, config: ProfileConfig, *, pos_weight: np.ndarray | None = None,
                 val_cases: Sequence[Any] = ()) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.model = model
        self.config = config
        self.val_cases = list(val_cases)
        lw = config.loss
        self.seg_loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                   lambda_dice=lw.dice_weight, lambda_ce=lw.ce_weight)
        weight = None if pos_weight is None or not lw.class_balanced else torch.as_tensor(pos_weight)
        self.register_buffer("pos_weight", weight, persistent=False)
        self.history: list[dict[str, float]] = []
        self._val_row: dict[str, float] = {}

    def forward(self, image: Tensor, present: Tensor | None = None) -> Any:
        return self.model(image, present)

    def loss(self, out: Any, seg: Tensor, markers: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(total, segmentation, marker) losses of a batch."""
        target = seg[:, None]
        seg_loss = self.seg_loss(out.seg_logits.float(), target)
        for level, logits in enumerate(out.deep_supervision, start=1):
            small = F.interpolate(target.float(), size=logits.shape[2:], mode="nearest").long()
            seg_loss = seg_loss + 0.5**level * self.seg_loss(logits.float(), small)
        lw = self.config.loss
        marker = masked_marker_loss(out.marker_logits.float(), markers, label_smoothing=lw.label_smoothing,
                                    pos_weight=self.pos_weight, focal_gamma=lw.focal_gamma)
        return seg_loss + lw.marker_weight * marker, seg_loss, marker

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self(batch["image"], batch["present"])
        total, seg_loss, marker = self.loss(out, batch["seg"], batch["markers"])
        n = len(batch["image"])
        self.log("train_loss", total.detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train_seg_loss", seg_loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train_marker_loss", marker.detach(), on_step=False, on_epoch=True, batch_size=n)
        return total

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Validation is whole-volume; it runs in :meth:`on_validation_epoch_end`."""

    def on_validation_epoch_end(self) -> None:
        from vbiopsy.train.profile_infer import predict_case

        if not self.val_cases:
            return
        patch = self.config.augment.patch
        dice, ratios, probs = [], [], []
        for case in self.val_cases:
            pred = predict_case(self.model, case, patch=patch, settings=self.config.inference)
            dice.append(whole_tumour_dice(pred.labels, case.seg))
            ratios.append(whole_tumour_volume_ratio(pred.labels, case.seg))
            probs.append(pred.markers)
        markers = np.stack([c.markers for c in self.val_cases])
        aucs = marker_auc(markers, np.stack(probs))
        score = validation_score(dice, aucs, self.config.optim.monitor)
        self.log(MONITOR, score)
        row = {MONITOR: round(score, 6), "val_wt_dice": round(float(np.mean(dice)), 6),
               "val_wt_volume_ratio": round(mean_defined(ratios), 4)}
        for name, auc in zip(self.config.data.markers, aucs):
            row[f"val_auc_{name}"] = math.nan if auc is None else round(auc, 6)
        self._val_row = row
        self.model.train()

    def on_train_epoch_end(self) -> None:
        """One history row per epoch: this epoch's training losses (+ its validation, when it ran)."""
        metrics = self.trainer.callback_metrics
        row: dict[str, float] = {"epoch": int(self.current_epoch)}
        for name in ("train_loss", "train_seg_loss", "train_marker_loss"):
            value = metrics.get(name)
            row[name] = round(float(value), 6) if value is not None else math.nan
        row["lr"] = float(self.optimizers().param_groups[0]["lr"]) if self.trainer.optimizers else math.nan  # type: ignore[union-attr]
        row.update(self._val_row)
        self._val_row = {}
        self.history.append(row)

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.config.optim
        optimizer = torch.optim.AdamW(self.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        warm, total = optim.warmup_epochs, optim.max_epochs

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            progress = (epoch - warm) / max(total - warm, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
