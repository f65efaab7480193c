"""One MGMT-Net fit: patch batches, whole-volume validation every few epochs, best kept, resumable.

MGMT-Net trains through the shared :func:`vbiopsy.train.fit.fit` (seeding and deterministic mode,
precision choice, per-epoch augmentation draw, keeping the best weights in memory instead of
pickled ``.ckpt`` files, resumable epoch states). Only its validation differs: it is whole-volume
sliding-window inference over ``module.val_cases``, run by the task's epoch-end hook, so the
validation "dataset" is a single placeholder item (:data:`WHOLE_VOLUME_VALIDATION`).
"""

from __future__ import annotations

from vbiopsy.errors import ConfigError
from vbiopsy.tasks.profile import ProfileTask
from vbiopsy.train.fit import FitResult, fit
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_patches import PatchDataset
from vbiopsy.train.resume import EpochCheckpoints

WHOLE_VOLUME_VALIDATION: list[int] = [0]
"""One placeholder item: its single validation batch triggers the task's whole-volume validation."""


def fit_profile(module: ProfileTask, patches: PatchDataset, config: ProfileConfig, *, seed: int,
                checkpoints: EpochCheckpoints | None = None) -> FitResult:
    """Train ``module`` on ``patches``; select on ``module.val_cases`` (none: keep the last weights);
    restore the best weights. ``checkpoints``: keep a resumable epoch state there, resume from it."""
    if not isinstance(config, ProfileConfig):
        raise ConfigError(f"config must be a ProfileConfig, got {type(config).__name__}")
    optim = config.optim
    validation = WHOLE_VOLUME_VALIDATION if module.val_cases else None
    return fit(module, patches, validation, optim, seed=seed, checkpoints=checkpoints,
               validate_every=min(optim.validate_every, optim.max_epochs))
