"""Helpers of the Tumor-Localizer tests: tiny synthetic brains with a known mid-plane and lesion."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vbiopsy.data.phantoms import PhantomConfig, PhantomPatient, generate_patient

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SPACING = (2.0, 2.0, 2.0)


@dataclass
class Synthetic:
    images: dict[str, np.ndarray]
    brain: np.ndarray
    lesion: np.ndarray
    distractors: np.ndarray
    normal: np.ndarray
    point_mm: np.ndarray


def plane_normal(yaw_deg: float) -> np.ndarray:
    yaw = np.deg2rad(yaw_deg)
    return np.array([np.cos(yaw), np.sin(yaw), 0.0])


def synthetic_brain(shape: tuple[int, int, int] = (32, 30, 24), *, offset_mm: float = 4.0, yaw_deg: float = 6.0,
                    lesion: bool = True, distractors: bool = False, seed: int = 0) -> Synthetic:
    """An ellipsoidal brain mirror-symmetric about a tilted, off-centre plane.

    Internal structure depends only on the distance to the plane (so it is exactly symmetric);
    ``lesion`` plants a one-sided sphere bright on FLAIR; ``distractors`` plants a mirror pair of
    equally bright blobs (symmetric, hence normal for a contralateral comparison).
    """
    rng = np.random.default_rng(seed)
    sp = np.asarray(SPACING)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    pts = idx * sp
    centre = (np.asarray(shape) - 1) * sp / 2
    normal = plane_normal(yaw_deg)
    point = centre + np.array([offset_mm, 0.0, 0.0])
    d = (pts - point) @ normal                       # signed distance to the plane
    along = pts - point - d[..., None] * normal      # position within the plane
    radii = np.array([24.0, 26.0, 20.0])
    local = np.stack([d, along @ np.array([-normal[1], normal[0], 0.0]), along[..., 2]], axis=-1)
    brain = ((local / radii) ** 2).sum(-1) <= 1.0
    u = np.abs(d)
    base = 100 + 15 * np.cos(u / 3.0) + 10 * np.cos(local[..., 1] / 5.0) - 30 * np.exp(-(u - 6) ** 2 / 8.0)
    flair = base.copy()
    t1c = 120 - 0.5 * (base - 100)
    lesion_mask = np.zeros(shape, dtype=bool)
    blobs = np.zeros(shape, dtype=bool)
    if lesion:
        c = point + normal * 12.0 + np.array([0.0, 6.0, 2.0])
        lesion_mask = (np.linalg.norm(pts - c, axis=-1) <= 7.0) & brain
        flair[lesion_mask] += 90
    if distractors:
        for side in (-1.0, 1.0):
            c = point + side * normal * 12.0 + np.array([0.0, -14.0, -6.0])
            blob = (np.linalg.norm(pts - c, axis=-1) <= 5.0) & brain
            blobs |= blob
        flair[blobs] += 90
    images = {}
    for name, img in (("flair", flair), ("t1c", t1c)):
        noisy = img + rng.normal(0, 2.0, shape)
        images[name] = np.where(brain, noisy, 0).astype(np.float32)
    return Synthetic(images, brain, lesion_mask, blobs, normal, point)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]


def recall_precision(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hit = float(np.count_nonzero(mask & truth))
    return hit / max(np.count_nonzero(truth), 1), hit / max(np.count_nonzero(mask), 1)


PHANTOM_CONFIG = PhantomConfig(n_patients=8, shape=(32, 36, 32), modalities=("t1c", "flair"), bias_strength=0.0,
                               diagnosis_mix={"glioma": 1.0})
"""Tiny bias-corrected glioma phantoms (~6 mm voxels), as the MRI-Processor would hand them over."""


@functools.lru_cache(maxsize=1)
def phantom_patients() -> tuple[PhantomPatient, ...]:
    """Phantom patients 0–5 of :data:`PHANTOM_CONFIG` (made once per test session)."""
    return tuple(generate_patient(PHANTOM_CONFIG, i) for i in range(6))
