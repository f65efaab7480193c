"""Scanner effects and acquisition geometry.

* intensity: each modality is multiplied by its unit (:data:`MODALITY_UNITS`, e.g. WM ≈ 1000 on
  T1) and a per-patient scale ``exp(N(0, intensity_jitter))`` (ASL calibration: half that), so
  absolute intensity carries no information;
* bias: a smooth multiplicative field ``exp(b)``, ``b`` a B-spline field on an 80 mm lattice
  with standard deviation ``bias_strength`` (half for ASL), independent per modality;
* noise: Rician for magnitude images (σ = ``noise_level`` × mean brain signal), Gaussian for
  ASL (σ = 150 × ``noise_level`` ml/100 g/min, i.e. 4.5 at the default); ASL is first blurred to
  its coarser effective resolution (Gaussian, σ = 2.5 mm);
* skull-stripped output (default) is zero outside the brain; raw output keeps the head and noise;
* raw acquisition: one slice axis resampled to thick slices (1.5–2.5 × the in-plane spacing,
  Gaussian slice profile), then the voxel axes permuted and flipped to a random non-RAS
  orientation with the matching affine. All modalities and the segmentation share that grid.

Anatomical images are stored as int16 (scanner-like units), ASL as float32 (ml/100 g/min).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from vbiopsy.data.phantoms.fields import LatticeField

MODALITY_UNITS: dict[str, float] = {"t1": 1000.0, "t1c": 1000.0, "t2": 1500.0, "flair": 1200.0, "asl": 1.0}
BIAS_STEP_MM = 80.0
ASL_BLUR_MM = 2.5
ASL_NOISE_PER_LEVEL = 150.0
RAW_THICKNESS_RANGE = (1.5, 2.5)
AXCODES: tuple[tuple[str, str, str], ...] = tuple(
    codes for perm in itertools.permutations(range(3)) for flips in itertools.product((False, True), repeat=3)
    if (codes := tuple(("LR", "PA", "IS")[a][int(not f)] for a, f in zip(perm, flips))) != ("R", "A", "S")
)
"""All 47 axis-aligned voxel orientations other than RAS (e.g. LPS, LAS, ASR…)."""


@dataclass(frozen=True)
class ScannerDraw:
    """One patient's scanner: per-modality ``scale`` and ``bias`` field, and the raw acquisition
    (``slice_axis`` 0–2 of the canonical grid, ``thickness_factor``, voxel ``axcodes``)."""

    scale: dict[str, float]
    bias: dict[str, LatticeField]
    slice_axis: int
    thickness_factor: float
    axcodes: tuple[str, str, str]


def draw_scanner(rng: np.random.Generator, modalities: tuple[str, ...], intensity_jitter: float,
                 bias_strength: float) -> ScannerDraw:
    """Draw scale, bias and raw geometry for every modality (all five, so a subset gets the same)."""
    scale, bias = {}, {}
    for modality in MODALITY_UNITS:
        jitter = intensity_jitter * (0.5 if modality == "asl" else 1.0)
        strength = bias_strength * (0.5 if modality == "asl" else 1.0)
        scale[modality] = float(np.exp(rng.normal(0.0, jitter)))
        bias[modality] = LatticeField.random(rng, BIAS_STEP_MM, strength)
    axis = int(rng.integers(3))
    factor = float(rng.uniform(*RAW_THICKNESS_RANGE))
    codes = AXCODES[int(rng.integers(len(AXCODES)))]
    return ScannerDraw({m: scale[m] for m in modalities}, {m: bias[m] for m in modalities}, axis, factor, codes)


def apply_scanner(clean: np.ndarray, modality: str, mask: np.ndarray | None, axes_mm: tuple[np.ndarray, ...],
                  draw: ScannerDraw, rng: np.random.Generator, noise_level: float,
                  spacing: tuple[float, float, float]) -> np.ndarray:
    """Bias, scale and noise for one clean image; zero outside ``mask`` if given (skull-stripped).

    Returns int16 for magnitude images, float32 for ASL; same shape as ``clean``.
    """
    image = clean
    if modality == "asl":
        image = ndimage.gaussian_filter(image, [ASL_BLUR_MM / s for s in spacing], mode="constant")
    image = image * np.exp(draw.bias[modality].on_grid(axes_mm)[0])
    image *= np.float32(MODALITY_UNITS[modality] * draw.scale[modality])
    sel = np.flatnonzero(mask) if mask is not None else slice(None)
    values = image.reshape(-1)[sel]
    if modality == "asl":
        values = values + rng.normal(0.0, ASL_NOISE_PER_LEVEL * noise_level, size=values.shape).astype(np.float32)
    elif noise_level > 0:
        reference = clean.reshape(-1)[sel] if mask is not None else clean[clean > 0]
        sigma = np.float32(noise_level * MODALITY_UNITS[modality] * draw.scale[modality] * float(reference.mean()))
        real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(values.shape, dtype=np.float32)
        values = np.sqrt(real * real + imag * imag)
    out = np.zeros(image.size, dtype=np.float32)
    out[sel] = values
    out = out.reshape(image.shape)
    if modality == "asl":
        return out
    return np.clip(np.rint(out), 0, np.iinfo(np.int16).max).astype(np.int16)


def thick_slices(arrays: dict[str, np.ndarray], labels: set[str], affine: np.ndarray, axis: int,
                 factor: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Resample ``axis`` to slices ``factor`` × thicker (centred, Gaussian slice profile).

    Arrays named in ``labels`` use nearest-neighbour sampling without blurring. Returns the new
    arrays (dtypes kept) and affine.
    """
    n_old = next(iter(arrays.values())).shape[axis]
    n_new = int(np.floor((n_old - 1) / factor)) + 1
    first = ((n_old - 1) - (n_new - 1) * factor) / 2.0
    pos = first + factor * np.arange(n_new)
    lower = np.floor(pos).astype(int)
    upper = np.minimum(lower + 1, n_old - 1)
    shape = [1, 1, 1]
    shape[axis] = n_new
    weight = (pos - lower).astype(np.float32).reshape(shape)
    out = {}
    for name, array in arrays.items():
        if name in labels:
            out[name] = np.take(array, np.rint(pos).astype(int), axis=axis)
            continue
        blurred = ndimage.gaussian_filter1d(array.astype(np.float32), factor / 2.355, axis=axis, mode="nearest")
        mixed = (1.0 - weight) * np.take(blurred, lower, axis=axis) + weight * np.take(blurred, upper, axis=axis)
        out[name] = np.rint(mixed).astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else mixed
    step = np.eye(4)
    step[axis, axis] = factor
    step[axis, 3] = first
    return out, affine @ step


def reorient(arrays: dict[str, np.ndarray], affine: np.ndarray,
             axcodes: tuple[str, str, str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Permute/flip RAS arrays to voxel orientation ``axcodes`` and return the matching affine."""
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                                nib.orientations.axcodes2ornt(axcodes))
    shape = next(iter(arrays.values())).shape
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, shape)
    return ({k: np.ascontiguousarray(nib.orientations.apply_orientation(v, transform)) for k, v in arrays.items()},
            new_affine)
