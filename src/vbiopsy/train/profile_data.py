"""MGMT-Net inputs of one patient: the four structural scans on a working grid, the tumour labels, the markers.

A case is read from its manifest row: every present modality is loaded (canonical RAS), checked to
share one grid, cropped to the bounding box of the brain (non-zero voxels of any modality, plus a
margin), resampled to the working voxel size, and z-scored inside the brain (0 outside and for an
absent modality). The segmentation, if any, is converted to BraTS 2024 labels and resampled by
nearest neighbour. What is needed to put a prediction back on the patient's own grid is kept in
:class:`NativeGrid`.

Marker labels (IDH, 1p/19q, TERT) are 0/1 or NaN when unknown; NaN is masked out of the loss.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.data.labels import LabelConvention, to_brats2024, unknown_values
from vbiopsy.data.nifti import Grid, load_volume
from vbiopsy.errors import InputError

MARKERS: tuple[str, ...] = ("idh", "codel_1p19q", "tert")
"""Manifest columns of the marker labels, in the order of the model's marker logits."""
CACHE_VERSION = 1


@dataclass(frozen=True)
class NativeGrid:
    """The patient's scan grid and the crop of it that the working grid covers."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    crop: tuple[tuple[int, int], ...]
    """(start, stop) per axis of the brain box in native voxels."""

    def crop_affine(self) -> np.ndarray:
        """Affine of the cropped native box."""
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.array([c[0] for c in self.crop]) + self.affine[:3, 3]
        return affine


@dataclass(frozen=True)
class ProfileCase:
    """One patient on the working grid.

    ``image``: (M, X, Y, Z) float32, z-scored in the brain; ``present``: (M,) bool; ``seg``:
    (X, Y, Z) uint8 BraTS 2024 labels or ``None``; ``markers``: (K,) float32, NaN = unknown;
    ``affine``: working-grid affine; ``native``: where the working grid sits in the scan.
    """

    subject_id: str
    image: np.ndarray
    present: np.ndarray
    seg: np.ndarray | None
    markers: np.ndarray
    affine: np.ndarray
    native: NativeGrid

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def missing(self) -> list[int]:
        """Indices of absent modalities."""
        return [i for i, p in enumerate(self.present) if not p]


def marker_values(row: dict[str, Any], markers: tuple[str, ...] = MARKERS) -> np.ndarray:
    """(K,) float32 marker labels from a manifest row: 0/1, NaN when unknown; other values refused."""
    out = np.full(len(markers), np.nan, dtype=np.float32)
    for k, name in enumerate(markers):
        value = row.get(name)
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"subject {row.get('subject_id')}", f"{name} = {value!r} is not 0, 1 or empty") from None
        if number not in (0.0, 1.0):
            raise InputError(f"subject {row.get('subject_id')}", f"{name} = {value!r} is not 0, 1 or empty")
        out[k] = number
    return out


def brain_box(arrays: list[np.ndarray], margin: int) -> tuple[tuple[int, int], ...]:
    """(start, stop) per axis of the non-zero voxels of any array, grown by ``margin`` voxels."""
    nonzero = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        nonzero |= a != 0
    if not nonzero.any():
        return tuple((0, s) for s in nonzero.shape)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(nonzero.any(axis=other))
        box.append((max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, nonzero.shape[axis])))
    return tuple(box)


def zscore_in_brain(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``image`` z-scored over ``brain`` voxels (0 outside); a constant image becomes 0."""
    out = np.zeros(image.shape, dtype=np.float32)
    values = image[brain]
    if values.size:
        std = float(values.std())
        out[brain] = (values - float(values.mean())) / (std if std > 0 else 1.0)
    return out


def _read_seg(path: Any, convention: str | None, grid: Grid, sid: str) -> np.ndarray:
    volume = load_volume(path, dtype=np.int16, allow_empty=True)
    problem = grid.mismatch(volume.grid)
    if problem:
        raise InputError(path, f"segmentation not on the images' grid ({problem})")
    conv = LabelConvention(convention or "brats2024")
    bad = unknown_values(volume.array, conv)
    if bad:
        other = LabelConvention.BRATS2021 if conv is LabelConvention.BRATS2024 else LabelConvention.BRATS2024
        hint = (f"; they look like the {other.value} convention (set seg_convention)"
                if not unknown_values(volume.array, other) else "")
        raise InputError(path, f"label values {bad} are not defined in the {conv.value} convention{hint}")
    return to_brats2024(volume.array, conv)


def load_case(row: dict[str, Any], modalities: tuple[str, ...], spacing_mm: float, *, margin_mm: float = 4.0,
              with_seg: bool = True, markers: tuple[str, ...] = MARKERS) -> ProfileCase:
    """Read, crop, resample and normalise one manifest row (see the module docstring)."""
    from vbiopsy.preprocess.resample import grid_at_spacing, resample_array

    sid = str(row["subject_id"])
    paths = {m: row.get(m) for m in modalities}
    present = np.array([paths[m] not in (None, "") for m in modalities])
    if not present.any():
        raise InputError(f"subject {sid}", f"none of the modalities {', '.join(modalities)} is given")
    volumes = {m: load_volume(p) for m, p in paths.items() if p not in (None, "")}
    reference = next(iter(volumes))
    grid = volumes[reference].grid
    for m, volume in volumes.items():
        problem = grid.mismatch(volume.grid)
        if problem:
            raise InputError(paths[m], f"not on the grid of {reference} ({problem}); resample or register first")
    spacing = np.array(grid.spacing)
    box = brain_box([v.array for v in volumes.values()], int(np.ceil(margin_mm / spacing.min())))
    native = NativeGrid(grid.shape, grid.affine, box)
    crop = tuple(slice(a, b) for a, b in box)
    cropped = Grid(tuple(b - a for a, b in box), native.crop_affine())  # type: ignore[arg-type]
    target = grid_at_spacing(cropped, (spacing_mm,) * 3)
    image = np.zeros((len(modalities), *target.shape), dtype=np.float32)
    resampled = {m: resample_array(v.array[crop], cropped.affine, target) for m, v in volumes.items()}
    brain = np.zeros(target.shape, dtype=bool)
    for array in resampled.values():
        brain |= array > 0
    for i, m in enumerate(modalities):
        if m in resampled:
            image[i] = zscore_in_brain(resampled[m], brain)
    seg = None
    if with_seg and row.get("seg") not in (None, ""):
        labels = _read_seg(row["seg"], row.get("seg_convention"), grid, sid)
        seg = resample_array(labels[crop], cropped.affine, target, interpolation="nearest").astype(np.uint8)
    return ProfileCase(sid, image, present, seg, marker_values(row, markers), target.affine, native)


def case_key(row: dict[str, Any], modalities: tuple[str, ...], settings: dict[str, Any]) -> str:
    """Cache key: the input files (path, size, mtime), the marker labels and the settings."""
    parts: dict[str, Any] = {"v": CACHE_VERSION, "settings": settings}
    for column in (*modalities, "seg", "seg_convention", *MARKERS):
        value = row.get(column)
        if column in modalities or column == "seg":
            if value not in (None, ""):
                stat = Path(value).stat()
                value = [str(value), stat.st_size, stat.st_mtime_ns]
        parts[column] = None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def save_case(case: ProfileCase, path: Path, key: str) -> None:
    """Cache a case as npz (written atomically)."""
    from vbiopsy.atomic import write_with_atomic

    arrays = {"image": case.image, "present": case.present, "markers": case.markers, "affine": case.affine,
              "native_affine": case.native.affine, "native_shape": np.array(case.native.shape),
              "crop": np.array(case.native.crop), "key": np.array(key), "subject_id": np.array(case.subject_id)}
    if case.seg is not None:
        arrays["seg"] = case.seg

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    write_with_atomic(path, write)


def load_cached_case(path: Path, key: str) -> ProfileCase | None:
    """The cached case, or ``None`` when absent or made from other inputs/settings."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            if str(data["key"]) != key:
                return None
            native = NativeGrid(tuple(int(v) for v in data["native_shape"]), data["native_affine"],  # type: ignore[arg-type]
                                tuple((int(a), int(b)) for a, b in data["crop"]))
            return ProfileCase(str(data["subject_id"]), data["image"], data["present"].astype(bool),
                               data["seg"] if "seg" in data else None, data["markers"], data["affine"], native)
    except (OSError, KeyError, ValueError):
        return None
