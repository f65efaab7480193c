"""Smooth random fields, defined in world millimetres so they do not depend on the output grid.

Two kinds:

* :class:`LatticeField` — cubic B-spline on a coarse control lattice over the template's field of
  view, evaluated separably on an axis-aligned grid (three small matrix products, no full-volume
  interpolation). Used for displacement and bias fields.
* :class:`FourierField` — a sum of random plane waves (random Fourier features), evaluated at
  arbitrary points; unit variance. Used for tumour shape, texture and enhancement patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vbiopsy.data.phantoms.template import FOV_EXTENT_MM, FOV_MIN_MM


BSPLINE_GAIN_3D = (315.0 / 151.0) ** 1.5
"""Ratio of coefficient to field standard deviation: a cubic B-spline's squared weights sum to
151/315 on average along one axis, so i.i.d. coefficients of sd σ give a 3-D field of sd σ / 3.01."""


def bspline_weights(coords_mm: np.ndarray, start_mm: float, step_mm: float, n_ctrl: int) -> np.ndarray:
    """Cubic B-spline weights, shape ``(len(coords_mm), n_ctrl)``, of a 1-D lattice of knots
    at ``start_mm + j * step_mm``."""
    t = (np.asarray(coords_mm, dtype=np.float64) - start_mm) / step_mm
    u = np.abs(t[:, None] - np.arange(n_ctrl)[None, :])
    near = (4.0 - 6.0 * u**2 + 3.0 * u**3) / 6.0
    far = (2.0 - u) ** 3 / 6.0
    return np.where(u < 1.0, near, np.where(u < 2.0, far, 0.0)).astype(np.float32)


@dataclass(frozen=True)
class LatticeField:
    """``coeffs`` (C, a, b, c): C components on a lattice with knots every ``step_mm`` starting at
    ``start_mm`` (3,) — one knot beyond the field of view on each side."""

    coeffs: np.ndarray
    start_mm: np.ndarray
    step_mm: float

    @classmethod
    def random(cls, rng: np.random.Generator, step_mm: float, sd: float, components: int = 1) -> LatticeField:
        """A field whose values have standard deviation ``sd`` (on average over space), from i.i.d.
        Gaussian coefficients on a lattice covering the template's field of view."""
        n = np.ceil(FOV_EXTENT_MM / step_mm).astype(int) + 3
        start = FOV_MIN_MM - step_mm
        coeffs = rng.normal(0.0, sd * BSPLINE_GAIN_3D, size=(components, *n)).astype(np.float32)
        return cls(coeffs, start.astype(np.float64), float(step_mm))

    def on_grid(self, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Evaluate on the grid spanned by three 1-D coordinate arrays → (C, X, Y, Z) float32."""
        wx, wy, wz = (bspline_weights(axes_mm[i], self.start_mm[i], self.step_mm, self.coeffs.shape[i + 1])
                      for i in range(3))
        return np.einsum("ia,jb,kc,nabc->nijk", wx, wy, wz, self.coeffs, optimize=True).astype(np.float32)


@dataclass(frozen=True)
class FourierField:
    """``sqrt(2/K) * Σ_k cos(freqs_k · p + phases_k)``; ``freqs`` (K, 3) in rad per unit of p."""

    freqs: np.ndarray
    phases: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n_waves: int, wavelength: tuple[float, float]) -> FourierField:
        """Waves with isotropic random directions and wavelengths uniform in ``wavelength``."""
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = rng.uniform(*wavelength, size=n_waves)
        freqs = directions * (2.0 * np.pi / lengths)[:, None]
        phases = rng.uniform(0.0, 2.0 * np.pi, size=n_waves)
        return cls(freqs, phases)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Values at points (N, 3) → (N,) float32, zero mean and unit variance over space."""
        arg = points @ self.freqs.T.astype(points.dtype) + self.phases.astype(points.dtype)
        scale = np.sqrt(2.0 / len(self.phases))
        return (scale * np.cos(arg).sum(axis=1)).astype(np.float32)
