"""Torch dataset over ROI cubes: channels made per item, augmented on the fly when training.

One item per patient and epoch (never pre-computed augmented copies, so validation and
out-of-fold predictions are one row per patient). Augmentation is seeded by (seed, epoch, item),
so a run is reproducible whatever the order items are drawn in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vbiopsy.data.roi_cubes import RoiCube
from vbiopsy.errors import ConfigError
from vbiopsy.train.augment import augment_cube
from vbiopsy.train.config import AugmentSettings
from vbiopsy.train.seeded_dataset import EpochSeededDataset


class CubeDataset(EpochSeededDataset):
    """Items ``{"image": (4, X, Y, Z) float32, "index": int[, "target"][, "tabular": (F,) float32]}``.

    Args:
        cubes: one :class:`RoiCube` per patient.
        targets: class index (int), binary label (float) or ``(time, event)`` rows; ``None`` for
            prediction (no label is ever attached then).
        tabular: (n, F) imputed clinical features, or ``None``.
        augment: augmentation settings (``None`` or disabled: the stored cube unchanged).
        seed: base seed of the augmentation.
    """

    def __init__(self, cubes: Sequence[RoiCube], *, targets: np.ndarray | None = None,
                 tabular: np.ndarray | None = None, augment: AugmentSettings | None = None, seed: int = 0) -> None:
        self.cubes = list(cubes)
        n = len(self.cubes)
        if targets is not None and len(targets) != n:
            raise ConfigError(f"{len(targets)} targets for {n} cubes")
        if tabular is not None and (tabular.ndim != 2 or len(tabular) != n):
            raise ConfigError(f"tabular must be (n={n}, features), got shape {tabular.shape}")
        if tabular is not None and not np.isfinite(tabular).all():
            raise ConfigError("tabular features contain NaN: impute them (training-fold statistics) first")
        self.targets = targets
        self.tabular = None if tabular is None else np.asarray(tabular, dtype=np.float32)
        self.augment = augment if augment is not None and augment.enabled else None
        self.init_seeding(seed)

    def __len__(self) -> int:
        return len(self.cubes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cube = self.cubes[index]
        if self.augment is None:
            image = cube.channels()
        else:
            raw, mask, drawn = augment_cube(cube.raw, cube.mask, spacing=cube.spacing, noise_scale=cube.stats.scale,
                                            settings=self.augment, rng=self.item_rng(index))
            self.drawn[index] = drawn
            image = cube.channels(raw, mask)
        item: dict[str, Any] = {"image": torch.from_numpy(image), "index": index}
        if self.targets is not None:
            target = self.targets[index]
            item["target"] = torch.as_tensor(target, dtype=torch.long if np.ndim(target) == 0 and
                                             np.issubdtype(np.asarray(target).dtype, np.integer) else torch.float32)
        if self.tabular is not None:
            item["tabular"] = torch.from_numpy(self.tabular[index])
        return item
