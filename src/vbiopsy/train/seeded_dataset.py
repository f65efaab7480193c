"""The reproducible-augmentation bookkeeping every training dataset shares: draws seeded by (seed, epoch, item).

A dataset draws each item's random augmentation from ``numpy.random.default_rng([seed, epoch, index])``,
so a run is reproducible whatever order (or worker) items are drawn in, a resumed run redraws exactly
what the interrupted one would have, and ``drawn[index]`` records the last draw of each item for tests
and audits. The training loop calls :meth:`EpochSeededDataset.set_epoch` at the start of every epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vbiopsy.errors import ConfigError


class EpochSeededDataset(Dataset):
    """Base for datasets whose augmentation is seeded by (seed, epoch, item); subclasses call
    :meth:`init_seeding` in their constructor and :meth:`item_rng` in ``__getitem__``."""

    seed: int
    epoch: int
    drawn: dict[int, dict[str, Any]]

    def init_seeding(self, seed: int) -> None:
        """Start at epoch 0 with base ``seed`` (an integer ≥ 0) and no draws recorded."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self.epoch = 0
        self.drawn = {}

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (called at the start of every training epoch)."""
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])
