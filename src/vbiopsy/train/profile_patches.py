"""MGMT-Net training patches: tumour-centred sampling, augmentation and modality dropout.

Each item is one patch of one patient, drawn afresh every epoch from a generator seeded by
(seed, epoch, item), so a run is reproducible whatever order the loader uses. The random ops
sample their parameters first and then call deterministic functions (:func:`flip_all`,
:func:`scale_shift`, :func:`vbiopsy.train.augment.deform`), and what was drawn is recorded.

Marker labels are patient-level, but the marker head sees one patch: a patch that holds little of
the tumour (the brain-centred ones, or a tumour-centred one at the edge of a large tumour) carries
no evidence for them, so its marker labels are noise. With ``marker_min_tumour_share`` > 0 they are
set to NaN (left out of the loss like unknown labels) when the patch holds less than that share of
the patient's whole tumour (:func:`tumour_share`); the segmentation still trains on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from vbiopsy.errors import ConfigError
from vbiopsy.train.augment import elastic_field
from vbiopsy.train.profile_config import ProfileAugment
from vbiopsy.train.profile_data import ProfileCase
from vbiopsy.train.seeded_dataset import EpochSeededDataset


def pad_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad the last three axes of ``array`` at the end up to at least ``shape``."""
    pad = [(0, 0)] * (array.ndim - 3) + [(0, max(int(s) - n, 0)) for n, s in zip(array.shape[-3:], shape)]
    return np.pad(array, pad) if any(p[1] for p in pad) else array


def patch_start(centre: Sequence[int], patch: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int]:
    """Corner of a ``patch`` centred on ``centre`` and shifted to lie inside ``shape``."""
    return tuple(int(min(max(c - p // 2, 0), max(s - p, 0))) for c, p, s in zip(centre, patch, shape))  # type: ignore[return-value]


def choose_centre(seg: np.ndarray | None, brain: np.ndarray, foreground_prob: float,
                  rng: np.random.Generator) -> tuple[tuple[int, int, int], bool]:
    """A tumour voxel with probability ``foreground_prob`` (when there is tumour), else a brain voxel."""
    tumour = rng.random() < foreground_prob and seg is not None and bool(seg.any())
    where = np.flatnonzero(seg > 0) if tumour and seg is not None else np.flatnonzero(brain)
    if where.size == 0:
        where = np.arange(brain.size)
    flat = int(where[rng.integers(where.size)])
    return tuple(int(v) for v in np.unravel_index(flat, brain.shape)), tumour  # type: ignore[return-value]


WHOLE_TUMOUR = (1, 2, 3)
"""BraTS 2024 labels of the whole tumour (NETC, SNFH, ET)."""


def tumour_share(seg: np.ndarray, box: tuple[slice, ...]) -> float:
    """Share of the whole-tumour voxels (labels 1–3) of ``seg`` (X, Y, Z) inside ``box``; 0 without tumour."""
    tumour = np.isin(seg, WHOLE_TUMOUR)
    total = int(tumour.sum())
    return float(tumour[box].sum()) / total if total else 0.0


def flip_all(image: np.ndarray, seg: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Reverse (M, X, Y, Z) ``image`` and (X, Y, Z) ``seg`` along the spatial ``axes``."""
    if not axes:
        return image, seg
    return (np.ascontiguousarray(np.flip(image, tuple(a + 1 for a in axes))),
            np.ascontiguousarray(np.flip(seg, axes)))


def scale_shift(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per-modality ``x·scale + shift`` on brain voxels (non-zero); background stays 0."""
    inside = image != 0
    return np.where(inside, image * scale[:, None, None, None] + shift[:, None, None, None], 0.0).astype(np.float32)


def warp(image: np.ndarray, seg: np.ndarray, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample every modality (linear) and the labels (nearest) at identity + ``field`` (3, X, Y, Z)."""
    grid = np.indices(seg.shape, dtype=np.float32) + field
    out = np.stack([ndimage.map_coordinates(c, grid, order=1, mode="constant") for c in image]).astype(np.float32)
    return out, ndimage.map_coordinates(seg, grid, order=0, mode="constant").astype(np.uint8)


def augment_patch(image: np.ndarray, seg: np.ndarray, present: np.ndarray, *, spacing: float,
                  settings: ProfileAugment, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """One random augmentation of a patch; returns image, seg, modality mask and what was drawn."""
    drawn: dict[str, Any] = {}
    axes = tuple(a for a in range(3) if rng.random() < settings.flip_prob)
    image, seg = flip_all(image, seg, axes)
    drawn["flip_axes"] = list(axes)
    if settings.elastic_magnitude_mm > 0 and rng.random() < settings.elastic_prob:
        field = elastic_field(seg.shape, np.full(3, settings.elastic_sigma_mm / spacing),
                              np.full(3, settings.elastic_magnitude_mm / spacing), rng)
        image, seg = warp(image, seg, field)
        drawn["elastic_rms_mm"] = settings.elastic_magnitude_mm
    if rng.random() < settings.intensity_prob:
        m = len(image)
        scale = 1.0 + rng.uniform(-settings.intensity_scale, settings.intensity_scale, m)
        shift = rng.uniform(-settings.intensity_shift, settings.intensity_shift, m)
        image = scale_shift(image, scale, shift)
        drawn["scale"], drawn["shift"] = np.round(scale, 4).tolist(), np.round(shift, 4).tolist()
    present = present.copy()
    if settings.modality_dropout > 0:
        hide = (rng.random(len(present)) < settings.modality_dropout) & present
        if hide.sum() >= present.sum():  # keep at least one modality
            hide[np.flatnonzero(present)[rng.integers(int(present.sum()))]] = False
        if hide.any():
            image = image.copy()
            image[hide] = 0.0
            present &= ~hide
            drawn["hidden"] = np.flatnonzero(hide).tolist()
    return image, seg, present, drawn


class PatchDataset(EpochSeededDataset):
    """Items ``{"image": (M, *patch), "seg": (*patch) long, "present": (M,) float, "markers": (K,),
    "index": int}``; ``markers`` NaN where unknown.

    Args:
        cases: training patients (with segmentations).
        patch: patch size in voxels (volumes smaller than it are zero-padded).
        settings: sampling and augmentation; ``augment=False`` for a deterministic draw without augmentation.
        length: items per epoch (default: one per patient; patients are cycled).
        marker_min_tumour_share: marker labels become NaN on a patch holding less than this share of the
            patient's whole tumour (see the module docstring); 0 = never.
    """

    def __init__(self, cases: Sequence[ProfileCase], patch: Sequence[int], settings: ProfileAugment, *,
                 seed: int = 0, length: int = 0, augment: bool = True, marker_min_tumour_share: float = 0.0) -> None:
        if not cases:
            raise ConfigError("PatchDataset needs at least one case")
        missing = [c.subject_id for c in cases if c.seg is None]
        if missing:
            raise ConfigError(f"training needs segmentations; {missing[0]} has none")
        self.cases = list(cases)
        self.patch = tuple(int(p) for p in patch)
        self.settings = settings
        self.length = length or len(self.cases)
        self.augment = augment
        share = marker_min_tumour_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= float(share) <= 1.0:
            raise ConfigError(f"marker_min_tumour_share must be a number in [0, 1], got {share!r}")
        self.marker_min_tumour_share = float(share)
        self.init_seeding(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index % len(self.cases)]
        rng = self.item_rng(index)
        image = pad_to(case.image, self.patch)
        seg = pad_to(case.seg, self.patch)  # type: ignore[arg-type]
        brain = (image != 0).any(axis=0)
        centre, tumour = choose_centre(seg, brain, self.settings.foreground_prob, rng)
        start = patch_start(centre, self.patch, seg.shape)
        box = tuple(slice(s, s + p) for s, p in zip(start, self.patch))
        drawn: dict[str, Any] = {"start": list(start), "tumour_centred": tumour}
        markers = case.markers.astype(np.float32)
        if self.marker_min_tumour_share > 0:
            drawn["tumour_share"] = round(tumour_share(seg, box), 4)
            if drawn["tumour_share"] < self.marker_min_tumour_share:
                markers = np.full_like(markers, np.nan)
                drawn["markers_masked"] = True
        image, seg, present = image[(slice(None), *box)], seg[box], case.present.copy()
        if self.augment:
            image, seg, present, more = augment_patch(image, seg, present, spacing=case.spacing[0],
                                                      settings=self.settings, rng=rng)
            drawn.update(more)
        self.drawn[index] = drawn
        return {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                "seg": torch.from_numpy(seg.astype(np.int64)), "present": torch.from_numpy(present.astype(np.float32)),
                "markers": torch.from_numpy(markers), "index": index}
