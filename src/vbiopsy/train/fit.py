"""One model fit with Lightning: early stopping on the monitored score, best weights restored.

The best state is kept in memory (a copy of the weights at the best validation score, strict
improvement) instead of Lightning's pickled ``.ckpt`` files; the caller saves it as safetensors.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader

from vbiopsy.tasks.aslnet import MONITOR, AslNetTask, probabilities
from vbiopsy.train.config import OptimSettings
from vbiopsy.train.dataset import CubeDataset


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (Lightning's ``seed_everything``); deterministic algorithms when asked."""
    L.seed_everything(seed, workers=False, verbose=False)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def bf16_supported() -> bool:
    """True where bf16 autocast is fast: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    checker = getattr(torch.backends.cpu, "get_cpu_capability", None)
    capability = checker() if checker else ""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx512_bf16) and "AVX512" in capability.upper()


def resolve_precision(setting: str) -> str:
    """Lightning precision string for ``auto`` / ``32`` / ``bf16-mixed``."""
    if setting == "auto":
        return "bf16-mixed" if bf16_supported() else "32-true"
    return "32-true" if setting == "32" else setting


def quiet_lightning() -> None:
    """Silence Lightning's start-up banners ("GPU available", tips); warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _EpochSetter(Callback):
    """Tell the training dataset which epoch it is (new augmentation draw each epoch)."""

    def __init__(self, dataset: CubeDataset) -> None:
        self.dataset = dataset

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.set_epoch(trainer.current_epoch)


class _KeepBest(Callback):
    """Copy the weights whenever the monitored score strictly improves."""

    def __init__(self) -> None:
        self.best_score = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get(MONITOR)
        if score is not None and float(score) > self.best_score:
            self.best_score = float(score)
            self.best_epoch = int(trainer.current_epoch)
            self.best_state = copy.deepcopy(pl_module.model.state_dict())


@dataclass
class FitResult:
    """Outcome of one fit: best epoch and score, epochs run, per-epoch history, precision used."""

    best_epoch: int
    best_score: float
    epochs: int
    precision: str
    history: list[dict[str, Any]] = field(default_factory=list)


def _loader(dataset: CubeDataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=generator,
                      drop_last=False)


def fit(module: AslNetTask, train: CubeDataset, val: CubeDataset, optim: OptimSettings, *, seed: int) -> FitResult:
    """Train ``module`` on ``train``, early-stop on ``val``'s score, restore the best weights."""
    seed_everything(seed, deterministic=optim.deterministic)
    quiet_lightning()
    keep = _KeepBest()
    precision = resolve_precision(optim.precision)
    trainer = L.Trainer(
        max_epochs=optim.max_epochs, accelerator="auto", devices=1, precision=precision,  # type: ignore[arg-type]
        callbacks=[_EpochSetter(train), keep,
                   EarlyStopping(MONITOR, mode="max", patience=optim.early_stopping_patience, min_delta=0.0,
                                 check_finite=False)],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, deterministic=False, gradient_clip_val=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
        trainer.fit(module, _loader(train, optim.batch_size, shuffle=True, seed=seed),
                    _loader(val, max(optim.batch_size, 4), shuffle=False))
    if keep.best_state is not None:
        module.model.load_state_dict(keep.best_state)
    return FitResult(keep.best_epoch, keep.best_score, int(trainer.current_epoch), precision, list(module.history))


@torch.no_grad()
def predict(module: AslNetTask, dataset: CubeDataset, *, batch_size: int = 8) -> np.ndarray:
    """Per-item outputs (see :func:`vbiopsy.tasks.aslnet.probabilities`), in dataset order, eval mode, fp32."""
    module.eval()
    outputs = []
    for batch in _loader(dataset, batch_size, shuffle=False):
        logits = module(batch["image"], batch.get("tabular"))
        outputs.append(probabilities(module.task, logits).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0,))
