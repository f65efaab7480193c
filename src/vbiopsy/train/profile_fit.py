"""One MGMT-Net fit with Lightning: patch batches, whole-volume validation every few epochs, best kept.

Reuses the ASLNet fit's pieces (seeding, precision choice, per-epoch augmentation draw, keeping the
best weights in memory instead of pickled ``.ckpt`` files); validation is whole-volume, so its
loader is a single placeholder item and the work happens in the task's epoch-end hook.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from vbiopsy.tasks.profile import MONITOR, ProfileTask
from vbiopsy.train.fit import FitResult, _EpochSetter, _KeepBest, quiet_lightning, resolve_precision, seed_everything
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_patches import PatchDataset


def fit_profile(module: ProfileTask, patches: PatchDataset, config: ProfileConfig, *, seed: int) -> FitResult:
    """Train ``module`` on ``patches``; select on ``module.val_cases``; restore the best weights."""
    optim = config.optim
    seed_everything(seed, deterministic=optim.deterministic)
    quiet_lightning()
    keep = _KeepBest()
    callbacks: list[L.Callback] = [_EpochSetter(patches), keep]  # type: ignore[list-item]
    if optim.early_stopping_patience:
        callbacks.append(EarlyStopping(MONITOR, mode="max", patience=optim.early_stopping_patience, check_finite=False))
    validate = bool(module.val_cases)
    every = min(optim.validate_every, optim.max_epochs)
    trainer = L.Trainer(
        max_epochs=optim.max_epochs, accelerator="auto", devices=1, precision=resolve_precision(optim.precision),  # type: ignore[arg-type]
        callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=every,
        limit_val_batches=1 if validate else 0, deterministic=False)
    loader = DataLoader(patches, batch_size=optim.batch_size, shuffle=True, num_workers=0, drop_last=False,
                        generator=torch.Generator().manual_seed(seed))
    placeholder = DataLoader([0], batch_size=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", message=".*check_val_every_n_epoch.*")
        trainer.fit(module, loader, placeholder if validate else None)
    if keep.best_state is not None:
        module.model.load_state_dict(keep.best_state)
    return FitResult(keep.best_epoch, keep.best_score, int(trainer.current_epoch), resolve_precision(optim.precision),
                     list(module.history))
