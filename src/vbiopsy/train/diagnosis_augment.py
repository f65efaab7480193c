"""Augmentation of a diagnoser sample (Virtual Biopsy §5): the same spatial op on the volume and its prior.

Parameters are drawn first (:func:`draw_augmentation`, from a NumPy generator, recorded as a
JSON-ready dict); then deterministic operations apply them (:func:`apply_augmentation`), so a
sample is reproducible from its seed and a test can replay exactly what was drawn:

- **rotate90**: ``k`` quarter turns in the axial plane (axes 0 = left→right, 1 = posterior→anterior
  of canonical RAS; needs a square axial grid), probability ``rotate_prob``, ``k`` uniform in {1, 2, 3};
- **flip**: left–right mirror (across the sagittal plane, axis 0), probability ``flip_prob``;
- **noise**: additive Gaussian noise N(0, ``noise_std``²) on the volume only, probability ``noise_prob``
  (MONAI ``RandGaussianNoise``);
- **gamma**: MONAI ``AdjustContrast`` — min–max rescale, power γ, rescale back — on the volume only,
  probability ``gamma_prob``, γ uniform in ``gamma_range``;
- **crop shift** (with a lesion crop, :mod:`.diagnosis_crop`): the crop window's offset, uniform in
  ± ``jitter`` voxels per axis. The crop then gets the volume's rotation and flip (it is a window of the
  same head) and its own noise field and gamma per channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.transforms import AdjustContrast

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.diagnosis_config import DiagnosisAugmentSettings

AXIAL_AXES = (0, 1)
SAGITTAL_FLIP_AXIS = 0


def _check_pair(volume: np.ndarray, prior: np.ndarray | None) -> None:
    if volume.ndim != 3:
        raise InputError("volume", f"expected a 3-D array (X, Y, Z), got shape {volume.shape}")
    if prior is not None and prior.shape != volume.shape:
        raise InputError("prior", f"shape {prior.shape} differs from the volume's {volume.shape}")


def rotate90(array: np.ndarray, k: int) -> np.ndarray:
    """``array`` (X, Y, Z) turned ``k`` quarter turns in the axial plane (X → Y); shape kept when X == Y."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer number of quarter turns, got {k!r}")
    return np.ascontiguousarray(np.rot90(array, int(k), axes=AXIAL_AXES))


def flip_left_right(array: np.ndarray) -> np.ndarray:
    """``array`` (X, Y, Z) mirrored across the sagittal plane (axis 0 reversed)."""
    return np.ascontiguousarray(np.flip(array, SAGITTAL_FLIP_AXIS))


def adjust_gamma(volume: np.ndarray, gamma: float) -> np.ndarray:
    """MONAI ``AdjustContrast(gamma)``: ``((x − min)/range)^γ · range + min``; float32, same shape."""
    if not np.isfinite(gamma) or gamma <= 0:
        raise ConfigError(f"gamma must be a finite number > 0, got {gamma!r}")
    out = AdjustContrast(gamma=float(gamma))(volume.astype(np.float32, copy=False))
    return np.asarray(out, dtype=np.float32)


def draw_augmentation(settings: DiagnosisAugmentSettings, rng: np.random.Generator,
                      shape: tuple[int, ...], crop_jitter: int = 0) -> dict[str, Any]:
    """The random parameters of one augmentation (JSON-ready): ``rotate_k``, ``flip``, ``noise_seed``, ``gamma``
    and ``crop_shift`` (3 ints in ± ``crop_jitter``).

    Every draw is made whether or not the op fires, so one setting's probability never changes
    what the others draw; the crop shift is drawn last. ``noise_seed`` seeds the noise field (``None``: no noise).
    """
    if isinstance(crop_jitter, bool) or not isinstance(crop_jitter, (int, np.integer)) or crop_jitter < 0:
        raise ConfigError(f"crop_jitter must be an integer >= 0, got {crop_jitter!r}")
    if not isinstance(settings, DiagnosisAugmentSettings):
        raise ConfigError(f"settings must be DiagnosisAugmentSettings, got {type(settings).__name__}")
    coins = rng.random(4)
    k = int(rng.integers(1, 4))
    noise_seed = int(rng.integers(0, 2**31 - 1))
    gamma = float(rng.uniform(*settings.gamma_range))
    rotate = bool(coins[0] < settings.rotate_prob)
    if rotate and len(shape) >= 2 and shape[0] != shape[1]:
        raise InputError("volume", f"90° axial rotations need a square axial grid, got shape {tuple(shape)}")
    return {
        "rotate_k": k if rotate else 0,
        "flip": bool(coins[1] < settings.flip_prob),
        "noise_seed": noise_seed if coins[2] < settings.noise_prob and settings.noise_std > 0 else None,
        "noise_std": settings.noise_std,
        "gamma": round(gamma, 6) if coins[3] < settings.gamma_prob else None,
        "crop_shift": [int(v) for v in rng.integers(-crop_jitter, crop_jitter + 1, 3)] if crop_jitter else [0, 0, 0],
    }


def apply_augmentation(volume: np.ndarray, prior: np.ndarray | None,
                       drawn: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply ``drawn`` (from :func:`draw_augmentation`) to ``volume`` and ``prior`` (X, Y, Z each).

    Spatial ops (rotation, flip) act on both identically; noise and gamma on the volume only.
    """
    _check_pair(volume, prior)
    out, mask = volume.astype(np.float32, copy=False), prior
    if drawn.get("rotate_k"):
        out = rotate90(out, drawn["rotate_k"])
        mask = rotate90(mask, drawn["rotate_k"]) if mask is not None else None
    if drawn.get("flip"):
        out = flip_left_right(out)
        mask = flip_left_right(mask) if mask is not None else None
    if drawn.get("noise_seed") is not None:
        noise = np.random.default_rng(drawn["noise_seed"]).normal(0.0, drawn["noise_std"], out.shape)
        out = (out + noise).astype(np.float32)
    if drawn.get("gamma") is not None:
        out = adjust_gamma(out, drawn["gamma"])
    return out, mask


def apply_crop_augmentation(crop: np.ndarray, drawn: dict[str, Any], jitter: int) -> np.ndarray:
    """The window of a stored lesion crop (M, X + 2·jitter, ...) at ``drawn["crop_shift"]``, rotated and flipped
    as the volume, with noise (its own field, seeded from ``noise_seed``) and gamma per channel: (M, X, Y, Z)."""
    from vbiopsy.train.diagnosis_crop import crop_window

    out = crop_window(crop, jitter, drawn.get("crop_shift", (0, 0, 0))).astype(np.float32, copy=False)
    channels = []
    for index, channel in enumerate(out):
        own = dict(drawn)
        if own.get("noise_seed") is not None:  # a noise field of its own, not the volume's
            own["noise_seed"] = int(own["noise_seed"]) + 1 + index
        channels.append(apply_augmentation(channel, None, own)[0])
    return np.stack(channels)


def augment_pair(volume: np.ndarray, prior: np.ndarray | None, settings: DiagnosisAugmentSettings,
                 rng: np.random.Generator, *, crop_jitter: int = 0) -> tuple[np.ndarray, np.ndarray | None,
                                                                             dict[str, Any]]:
    """One random augmentation of ``volume`` and ``prior``; returns both and what was drawn (with a lesion crop's
    shift for ``crop_jitter`` > 0, applied by :func:`apply_crop_augmentation`)."""
    _check_pair(volume, prior)
    drawn = draw_augmentation(settings, rng, volume.shape, crop_jitter)
    out, mask = apply_augmentation(volume, prior, drawn)
    return out, mask, drawn
