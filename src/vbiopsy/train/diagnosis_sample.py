"""One patient's diagnoser inputs (:class:`DiagnosisSample`, cached as ``.npz``) and the torch dataset over them.

A sample holds the whole-brain image and brain mask on the working grid, the tumour priors on the
same grid, the record of how it was made, and optionally the tumour-centred crops (one per prior,
:mod:`.diagnosis_crop`). :class:`DiagnosisDataset` turns samples into model inputs, with the
augmentation of :mod:`.diagnosis_augment` during training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vbiopsy.atomic import write_with_atomic
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.diagnosis_augment import apply_crop_augmentation, augment_pair
from vbiopsy.localize.lesion_measurements import MEASUREMENTS, lesion_measurements
from vbiopsy.train.diagnosis_config import DiagnosisAugmentSettings, LesionMeasurementSettings
from vbiopsy.train.diagnosis_crop import crop_window
from vbiopsy.train.seeded_dataset import EpochSeededDataset

PRIORS: tuple[str, ...] = ("coarse", "refined", "seg")


@dataclass(frozen=True, eq=False)
class DiagnosisSample:
    """One patient on the working grid: ``image`` (float32 z-scored, 0 outside the brain), ``brain`` (bool),
    ``priors`` name → float32 [0, 1] (``coarse``, ``refined``, ``seg`` when a segmentation exists),
    ``record`` (box on the scan grid, localiser summary, ``warnings``) and, with ``data.lesion_crop``,
    ``crops`` prior name → the stored tumour-centred crop (M, ...) float32 (:mod:`.diagnosis_crop`)."""

    image: np.ndarray
    brain: np.ndarray
    priors: dict[str, np.ndarray]
    record: dict[str, Any] = field(default_factory=dict)
    crops: dict[str, np.ndarray] = field(default_factory=dict)
    _measured: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    def prior(self, name: str) -> np.ndarray | None:
        """Prior ``name`` (``none`` → ``None``); a missing one is an :class:`InputError`."""
        if name == "none":
            return None
        if name not in self.priors:
            raise InputError(f"subject {self.record.get('subject_id', '?')}",
                             f"no {name!r} prior (has: {', '.join(self.priors) or 'none'}); "
                             "the 'seg' prior needs a segmentation in the manifest")
        return self.priors[name]

    def crop(self, name: str) -> np.ndarray:
        """The stored crop centred on prior ``name``; a missing one is an :class:`InputError`."""
        if name not in self.crops:
            raise InputError(f"subject {self.record.get('subject_id', '?')}",
                             f"no lesion crop for the {name!r} prior (has: {', '.join(self.crops) or 'none'}); "
                             "set data.lesion_crop")
        return self.crops[name]

    def measurements(self, name: str, settings: LesionMeasurementSettings) -> np.ndarray:
        """The :data:`~vbiopsy.localize.lesion_measurements.MEASUREMENTS` (float32) of the central window of the
        crop centred on prior ``name`` (cut and measured with ``settings``); computed once per sample and
        settings."""
        key = (name, settings.model_dump_json())
        if key not in self._measured:
            crop, thresholds = settings.crop, settings.thresholds
            window = crop_window(self.crop(name), crop.jitter_voxels)
            self._measured[key] = lesion_measurements(dict(zip(crop.modalities, window)), crop.spacing_mm,
                                                      enhancing_z=thresholds.enhancing_z, flair_z=thresholds.flair_z)
        return self._measured[key]

    def save(self, path: Path, key: str) -> Path:
        """Write to ``path`` (.npz, atomically) with the cache ``key``."""
        arrays = {"image": self.image, "brain": self.brain, **{f"prior_{k}": v for k, v in self.priors.items()},
                  **{f"crop_{k}": v for k, v in self.crops.items()}}
        meta = json.dumps({"key": key, "record": self.record})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=np.array(meta), **arrays)

        return write_with_atomic(path, write)

    @classmethod
    def load(cls, path: Path, key: str | None = None) -> DiagnosisSample | None:
        """The sample at ``path``; ``None`` if absent, unreadable or made with another ``key``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if key is not None and meta["key"] != key:
                    return None
                priors = {k[6:]: data[k] for k in data.files if k.startswith("prior_")}
                crops = {k[5:]: data[k] for k in data.files if k.startswith("crop_")}
                return cls(data["image"], data["brain"], priors, meta["record"], crops)
        except (OSError, KeyError, ValueError):
            return None



class DiagnosisDataset(EpochSeededDataset):
    """Items ``{"image": (1, X, Y, Z), "index": int[, "prior": (1, X, Y, Z)][, "crop": (M, x, y, z)][, "clinical": (k,)]
    [, "target": int64]}``; ``crop_jitter`` (the stored crops' margin) asks for the lesion crop of the prior;
    ``measurements`` (the crop and thresholds to measure with) appends the lesion measurements of each sample's crop
    (:mod:`vbiopsy.localize.lesion_measurements`) to its ``clinical`` values (alone without clinical values).

    Augmentation (training only) is seeded by (seed, epoch, item); ``drawn[index]`` records the last draw.
    """

    def __init__(self, samples: Sequence[DiagnosisSample], *, prior: str = "none", targets: np.ndarray | None = None,
                 augment: DiagnosisAugmentSettings | None = None, seed: int = 0,
                 clinical: np.ndarray | None = None, crop_jitter: int | None = None,
                 measurements: LesionMeasurementSettings | None = None) -> None:
        if prior not in ("none", *PRIORS):
            raise ConfigError(f"prior must be one of none, {', '.join(PRIORS)}; got {prior!r}")
        if targets is not None and len(targets) != len(samples):
            raise ConfigError(f"{len(targets)} targets for {len(samples)} samples")
        if clinical is not None and (np.ndim(clinical) != 2 or len(clinical) != len(samples)):
            raise ConfigError(f"clinical must be (n={len(samples)}, k), got shape {np.shape(clinical)}")
        self.samples = list(samples)
        self.prior_name = prior
        self.clinical = None if clinical is None else np.asarray(clinical, dtype=np.float32)
        if measurements is not None:
            if prior == "none":
                raise ConfigError("lesion measurements are taken on the crop centred on a prior: prior must not "
                                  "be 'none' with measurements")
            measured = np.stack([s.measurements(prior, measurements) for s in self.samples]) if self.samples \
                else np.zeros((0, len(MEASUREMENTS)), np.float32)
            self.clinical = measured if self.clinical is None else np.hstack([self.clinical, measured])
        if crop_jitter is not None and (isinstance(crop_jitter, bool) or not isinstance(crop_jitter, int)
                                        or crop_jitter < 0):
            raise ConfigError(f"crop_jitter must be None (no lesion crop) or an integer >= 0, got {crop_jitter!r}")
        if crop_jitter is not None and prior == "none":
            raise ConfigError("a lesion crop is centred on a prior: prior must not be 'none' with crop_jitter")
        self.crop_jitter = crop_jitter
        for sample in self.samples:
            sample.prior(prior)  # a missing prior or crop fails here, not mid-epoch
            if crop_jitter is not None:
                sample.crop(prior)
        self.targets = targets
        self.augment = augment if augment is not None and augment.enabled else None
        self.init_seeding(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image, prior = sample.image, sample.prior(self.prior_name)
        jitter = self.crop_jitter
        crop = None if jitter is None else sample.crop(self.prior_name)
        if self.augment is not None:
            image, prior, drawn = augment_pair(image, prior, self.augment, self.item_rng(index),
                                               crop_jitter=jitter or 0)
            self.drawn[index] = drawn
            crop = None if crop is None else apply_crop_augmentation(crop, drawn, jitter or 0)
        elif crop is not None:
            crop = crop_window(crop, jitter or 0)
        item: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(image, np.float32))[None],
                                "index": index}
        if prior is not None:
            item["prior"] = torch.from_numpy(np.ascontiguousarray(prior, np.float32))[None]
        if crop is not None:
            item["crop"] = torch.from_numpy(np.ascontiguousarray(crop, np.float32))
        if self.clinical is not None:
            item["clinical"] = torch.from_numpy(self.clinical[index].copy())
        if self.targets is not None:
            item["target"] = torch.as_tensor(int(self.targets[index]), dtype=torch.long)
        return item
