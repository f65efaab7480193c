"""ASLNet inputs kept as raw cubes: the ROI box plus the local-window margin, channels made on demand.

Augmentation must act on the *signal* before the derived channels (Rician noise on CBF, then
z-scores and log; the reference code noised the channels and rectified the signed ones). So a
patient is stored as the raw values of the ROI cube plus the half-window margin the local z-score
needs, the brain mask on the same region and the whole-scan statistics; :meth:`RoiCube.channels`
turns a (possibly augmented) copy into the four channels. Without augmentation the result equals
:func:`~vbiopsy.preprocess.aslnet_channels.aslnet_inputs` except where the brain touches the edge of
the scan (there the region is padded with background instead of edge-replicated).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.atomic import write_with_atomic
from vbiopsy.data.nifti import load_volume
from vbiopsy.errors import InputError
from vbiopsy.preprocess.aslnet_channels import (
    GlobalStats,
    feature_channels,
    global_stats,
    local_window,
    statistics_mask,
)
from vbiopsy.preprocess.aslnet_roi import RoiBox, check_volume, compute_roi, crop, resample_cube

Shape3 = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class RoiCube:
    """One patient's ROI: raw values and mask on the box grown by ``margin`` voxels per side.

    Attributes:
        raw: float32 (X + 2·mx, Y + 2·my, Z + 2·mz), scan values (input units), 0 outside the scan.
        mask: bool, same shape: the brain/statistics mask, False outside the scan.
        margin: voxels added on each side (half the local window).
        stats: whole-scan statistics of the raw and zg channels.
        box: the ROI on the scan grid (exact placement back with ``paste_back``).
        window_mm: local z-score window side.
        out_shape: channels are resampled to this grid when set.
    """

    raw: np.ndarray
    mask: np.ndarray
    margin: Shape3
    stats: GlobalStats
    box: RoiBox
    window_mm: float = 15.0
    out_shape: Shape3 | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the source grid."""
        return self.box.spacing

    def channels(self, raw: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        """float32 (4, *shape) channels [raw, zg, zl, log] of ``raw``/``mask`` (default: the stored ones)."""
        raw = self.raw if raw is None else raw
        mask = self.mask if mask is None else mask
        core = tuple(slice(m, n - m) for m, n in zip(self.margin, raw.shape))
        out = feature_channels(raw, mask, spacing=self.spacing, window_mm=self.window_mm, stats=self.stats, core=core)
        if self.out_shape is not None and tuple(self.out_shape) != out.shape[1:]:
            out = resample_cube(out, self.out_shape).astype(np.float32, copy=False)
        return out

    def save(self, path: Path, key: str) -> Path:
        """Write to ``path`` (.npz, atomically) with the cache ``key``."""
        meta = {"key": key, "margin": list(self.margin), "stats": [self.stats.low_clip, self.stats.median,
                                                                   self.stats.scale],
                "box": self.box.to_dict(), "window_mm": self.window_mm,
                "out_shape": list(self.out_shape) if self.out_shape else None}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, raw=self.raw, mask=self.mask, meta=np.array(json.dumps(meta)))

        return write_with_atomic(path, write)

    @classmethod
    def load(cls, path: Path, key: str | None = None) -> RoiCube | None:
        """The cube stored at ``path``; ``None`` if absent, unreadable or made with another ``key``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if key is not None and meta["key"] != key:
                    return None
                raw, mask = data["raw"], data["mask"]
        except (OSError, KeyError, ValueError):
            return None
        return cls(raw, mask, tuple(meta["margin"]), GlobalStats(*meta["stats"]), RoiBox.from_dict(meta["box"]),
                   float(meta["window_mm"]), tuple(meta["out_shape"]) if meta["out_shape"] else None)


def grow(box: RoiBox, margin: Sequence[int]) -> RoiBox:
    """``box`` with ``margin`` more voxels on each side of each axis."""
    return RoiBox(box.centre_vox, tuple(a - m for a, m in zip(box.start, margin)),
                  tuple(b + m for b, m in zip(box.stop, margin)), box.source_shape, box.affine)


def extract_cube(image: str | Path, *, side_mm: float = 70.0, top_pct: float = 0.01, centre: str = "brightest",
                 brain_mask: str | Path | None = None, seg: str | Path | None = None,
                 window_mm: float = 15.0, out_shape: Sequence[int] | None = None) -> RoiCube:
    """Read one scan and cut its ROI cube (see :class:`RoiCube`).

    ``centre``: ``"brightest"`` (paper: whole scan), ``"brightest_in_brain"`` (needs ``brain_mask``)
    or ``"seg"`` (centroid of ``seg > 0``, on the scan's grid).

    Raises:
        InputError: unreadable or unusable scan, mask or segmentation (naming the file).
    """
    volume = load_volume(image)
    array = check_volume(volume.array, image)
    mask = None
    if brain_mask is not None:
        mask_volume = load_volume(brain_mask, dtype=np.uint8, allow_empty=True)
        if volume.grid.mismatch(mask_volume.grid):
            raise InputError(brain_mask, f"brain mask is not on the grid of {image}")
        mask = mask_volume.array > 0
    centre_mm = None
    if centre == "seg":
        if seg is None:
            raise InputError(image, "roi.centre is 'seg' but the manifest has no segmentation for this subject")
        labels = load_volume(seg, dtype=np.int16, allow_empty=True)
        if volume.grid.mismatch(labels.grid):
            raise InputError(seg, f"segmentation is not on the grid of {image}")
        if not (labels.array > 0).any():
            raise InputError(seg, "segmentation is empty; cannot centre the ROI on it")
        vox = np.argwhere(labels.array > 0).mean(0)
        centre_mm = volume.affine[:3, :3] @ vox + volume.affine[:3, 3]
    elif centre == "brightest_in_brain" and mask is None:
        raise InputError(image, "roi.centre is 'brightest_in_brain' but the manifest has no brain_mask column")
    stats_mask = statistics_mask(array, mask, brain_mask if mask is not None else image)
    box = compute_roi(array, volume.affine, side_mm=side_mm, top_pct=top_pct,
                      search_mask=stats_mask if centre == "brightest_in_brain" else None, centre_mm=centre_mm, where=image)
    margin = tuple(w // 2 for w in local_window(box.spacing, window_mm))
    region = grow(box, margin)
    raw = crop(array.astype(np.float32, copy=False), region, fill=0.0).astype(np.float32, copy=False)
    region_mask = crop(stats_mask.astype(np.uint8), region, fill=0).astype(bool)
    target = tuple(int(n) for n in out_shape) if out_shape is not None else None
    return RoiCube(raw, region_mask, margin, global_stats(array, stats_mask),  # type: ignore[arg-type]
                   box.with_out_shape(target) if target else box, window_mm, target)


def cube_key(paths: Mapping[str, str | Path | None], settings: Mapping[str, Any]) -> str:
    """Cache key: the input files' paths, sizes and modification times plus the ROI settings."""
    parts: dict[str, Any] = {"settings": dict(settings)}
    for name, path in sorted(paths.items()):
        if path is not None:
            stat = Path(path).stat()
            parts[name] = [str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
