"""Per-patient anatomy: the template deformed by a random affine, a smooth displacement field and
the tumour's mass effect, sampled as tissue partial volumes on the output grid.

All maps are *backward*: for each output voxel at ``x`` (patient space, mm) we compute the point
``y`` of the tumour-bearing template it shows (global warp) and the point ``z = M(y)`` of the
healthy template whose tissue was pushed there by the tumour (mass effect). The tumour itself is
drawn at ``y`` (see :mod:`vbiopsy.data.phantoms.tumour`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vbiopsy.data.nifti import Grid
from vbiopsy.data.phantoms.fields import LatticeField
from vbiopsy.data.phantoms.template import Template, axis_coordinates

BRAIN_PIVOT_MM = np.array([0.0, -18.0, 10.0])
"""Centre (MNI mm) about which the random affine rotates and scales the head."""
DISPLACEMENT_STEP_MM = 40.0
MASS_EFFECT_TAPER_MM = 40.0
"""Beyond about ``radius + 40 mm`` the mass effect fades (Gaussian taper), leaving the skull fixed."""
SKULL_LAYERS_MM: dict[str, tuple[float, float]] = {"extra_csf": (0.0, 2.5), "bone": (2.5, 8.0), "scalp": (8.0, 13.0)}
"""Head layers outside the brain surface for raw scans: (inner, outer) distance in mm (× a
per-patient thickness factor)."""


@dataclass(frozen=True)
class Deformation:
    """Patient-from-template geometry: ``x = pivot + matrix (y − pivot) + translation``, plus a
    smooth displacement (mm, 3 components) added to the backward map."""

    matrix: np.ndarray
    translation_mm: np.ndarray
    displacement: LatticeField
    skull_factor: float

    def describe(self) -> dict[str, object]:
        """Summary for ground truth: scales (from the matrix) and translation in mm."""
        return {"scales": [round(float(s), 4) for s in np.linalg.svd(self.matrix, compute_uv=False)],
                "translation_mm": [round(float(t), 3) for t in self.translation_mm]}


def rotation(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation matrix R = Rz · Ry · Rx for angles (x, y, z) in radians."""
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_deformation(rng: np.random.Generator, amplitude_mm: float) -> Deformation:
    """Scale ±5 % per axis, rotation ±5° per axis, translation N(0, 2 mm), displacement sd
    ``amplitude_mm`` on a 40 mm B-spline lattice, skull thickness factor 0.8–1.25."""
    scales = rng.uniform(0.95, 1.05, size=3)
    matrix = rotation(np.deg2rad(rng.uniform(-5.0, 5.0, size=3))) @ np.diag(scales)
    translation = rng.normal(0.0, 2.0, size=3)
    displacement = LatticeField.random(rng, DISPLACEMENT_STEP_MM, amplitude_mm, components=3)
    return Deformation(matrix, translation, displacement, float(rng.uniform(0.8, 1.25)))


def template_coordinates(defo: Deformation, grid: Grid) -> np.ndarray:
    """Backward global warp: template point ``y`` (3, X, Y, Z) float32 mm for every output voxel."""
    axes = axis_coordinates(grid)
    inv = np.linalg.inv(defo.matrix).astype(np.float32)
    shifted = [axes[j] - np.float32(BRAIN_PIVOT_MM[j] + defo.translation_mm[j]) for j in range(3)]
    views = [shifted[0][:, None, None], shifted[1][None, :, None], shifted[2][None, None, :]]
    y = defo.displacement.on_grid(axes)
    for i in range(3):
        y[i] += np.float32(BRAIN_PIVOT_MM[i])
        for j in range(3):
            y[i] += inv[i, j] * views[j]
    return y


def mass_effect(y: np.ndarray, centre_mm: np.ndarray, radius_mm: float, fraction: float) -> np.ndarray:
    """Backward mass effect: healthy-template point ``z`` (3, …) for tumour-space points ``y``.

    A ball of volume ``fraction × 4/3 π radius³`` is inserted at the centre and displaces tissue
    radially with volume conservation (``r_src³ = r³ − fraction × radius³``), tapered by
    ``exp(−(r / (radius + 40 mm))²)`` so the effect stays local.
    """
    c = np.asarray(centre_mm, dtype=np.float32).reshape(3, *([1] * (y.ndim - 1)))
    d = y - c
    r = np.sqrt((d * d).sum(axis=0))
    r_src = np.cbrt(np.maximum(r**3 - np.float32(fraction * radius_mm**3), 0.0))
    shrink = 1.0 - np.divide(r_src, r, out=np.zeros_like(r), where=r > 0)
    taper = np.exp(-((r / np.float32(radius_mm + MASS_EFFECT_TAPER_MM)) ** 2))
    return y - d * (taper * shrink)[None]


def _sample(volume: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Trilinear sample of ``volume`` at fractional indices (3, N); zero outside."""
    return ndimage.map_coordinates(volume, index, order=1, mode="constant", cval=0.0, prefilter=False)


def warp_tissue(template: Template, z: np.ndarray) -> dict[str, np.ndarray]:
    """Partial volumes ``gm``, ``wm``, ``csf``, ``brain`` (float32, grid shape) at template points z."""
    shape = z.shape[1:]
    index = template.world_to_index(z.reshape(3, -1).T).T.astype(np.float32)
    brain = _sample(template.brain, index)
    inside = np.flatnonzero(brain > 1e-3)
    out = {"brain": brain}
    for name in ("gm", "wm"):
        values = np.zeros_like(brain)
        values[inside] = _sample(getattr(template, name), index[:, inside])
        out[name] = values
    out["gm"] = np.minimum(out["gm"], brain)
    out["wm"] = np.minimum(out["wm"], brain - out["gm"])
    out["csf"] = np.maximum(brain - out["gm"] - out["wm"], 0.0)
    return {k: v.reshape(shape) for k, v in out.items()}


def head_layers(template: Template, y: np.ndarray, thickness: float) -> dict[str, np.ndarray]:
    """Partial volumes of extra-axial CSF, bone and scalp around the brain (raw scans only).

    The brain surface distance is sampled at the globally warped points ``y`` (the skull does
    not feel the mass effect); layer boundaries get a one-voxel linear ramp.
    """
    index = template.world_to_index(y.reshape(3, -1).T).T.astype(np.float32)
    outside = -ndimage.map_coordinates(template.depth_mm, index, order=1, mode="nearest", prefilter=False)
    outside = outside.reshape(y.shape[1:])
    ramp = float(min(template.grid.spacing))
    layers = {}
    for name, (inner, outer) in SKULL_LAYERS_MM.items():
        lo, hi = inner * thickness, outer * thickness
        rise = np.clip((outside - lo) / ramp + 0.5, 0.0, 1.0)
        fall = np.clip((hi - outside) / ramp + 0.5, 0.0, 1.0)
        layers[name] = (rise * fall).astype(np.float32)
    return layers
