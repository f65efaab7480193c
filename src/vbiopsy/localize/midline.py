"""The brain's mid-sagittal plane, estimated from the scan, and mirroring across it.

The plane is the reflection that makes the brain most similar to itself: it maximises the
correlation between a guide image (brain mask plus clipped robust intensities) and its mirror
image. Parameters: offset along the left–right axis from the brain's centroid (mm), yaw (about
the superior axis) and roll (about the anterior axis), in degrees. A grid search over the offset
on a ~4 mm copy finds the basin, then a bounded Powell search refines all three. The image
centre is never assumed: a head off-centre or tilted by up to ``max_angle_deg`` is handled.

Coordinates are millimetres on the voxel grid (``index × spacing``), canonical RAS axes: axis 0
left→right, so a symmetric brain has a plane normal close to (1, 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

Spacing = tuple[float, float, float]

SEARCH_MM = 4.0
MAX_OFFSET_MM = 30.0
MAX_ANGLE_DEG = 15.0


@dataclass(frozen=True)
class MidPlane:
    """A plane ``{p : n·(p − point) = 0}`` in grid millimetres, with the search's result."""

    normal: tuple[float, float, float]
    point_mm: tuple[float, float, float]
    offset_mm: float
    yaw_deg: float
    roll_deg: float
    correlation: float

    def reflect(self, points_mm: np.ndarray) -> np.ndarray:
        """Mirror images of ``points_mm`` (N, 3) across the plane."""
        n = np.asarray(self.normal)
        d = (points_mm - np.asarray(self.point_mm)) @ n
        return points_mm - 2.0 * d[:, None] * n[None, :]

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"normal": [round(v, 5) for v in self.normal], "point_mm": [round(v, 2) for v in self.point_mm],
                "offset_mm": round(self.offset_mm, 2), "yaw_deg": round(self.yaw_deg, 2),
                "roll_deg": round(self.roll_deg, 2), "correlation": round(self.correlation, 4)}


def _plane(params: np.ndarray, centre_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offset, yaw, roll = params
    yaw, roll = np.deg2rad(yaw), np.deg2rad(roll)
    normal = np.array([np.cos(yaw) * np.cos(roll), np.sin(yaw), np.cos(yaw) * np.sin(roll)])
    return normal / np.linalg.norm(normal), centre_mm + np.array([offset, 0.0, 0.0])


def estimate_midplane(guide: np.ndarray, brain: np.ndarray, spacing: Spacing, *,
                      search_mm: float = SEARCH_MM, max_offset_mm: float = MAX_OFFSET_MM,
                      max_angle_deg: float = MAX_ANGLE_DEG) -> MidPlane:
    """Estimate the mid-sagittal plane of ``guide`` (X, Y, Z) inside the boolean ``brain``.

    ``guide`` should be positive inside the brain and 0 outside (its outline carries most of the
    symmetry; internal structure refines it).
    """
    sp = np.asarray(spacing, dtype=float)
    step = np.maximum(1, np.round(search_mm / sp)).astype(int)
    sigma = step / 2.0
    smooth = ndimage.gaussian_filter(np.where(brain, guide, 0).astype(np.float32), sigma)
    small = smooth[::step[0], ::step[1], ::step[2]]
    small_brain = brain[::step[0], ::step[1], ::step[2]]
    small_sp = sp * step
    region = ndimage.binary_dilation(small_brain, iterations=2) if small_brain.any() else small_brain
    index = np.argwhere(region).astype(float)
    points = index * small_sp
    values = small[tuple(index.T.astype(int))]
    centre = np.argwhere(small_brain).mean(axis=0) * small_sp

    def cost(params: np.ndarray) -> float:
        normal, point = _plane(params, centre)
        d = (points - point) @ normal
        mirrored = ndimage.map_coordinates(small, ((points - 2.0 * d[:, None] * normal) / small_sp).T,
                                           order=1, mode="constant", cval=0.0)
        if values.std() == 0 or mirrored.std() == 0:
            return 1.0
        return -float(np.corrcoef(values, mirrored)[0, 1])

    offsets = np.arange(-max_offset_mm * 2 / 3, max_offset_mm * 2 / 3 + 1e-6, max(float(small_sp[0]) / 2, 1.0))
    start = min(offsets, key=lambda o: cost(np.array([o, 0.0, 0.0])))
    bounds = [(-max_offset_mm, max_offset_mm), (-max_angle_deg, max_angle_deg), (-max_angle_deg, max_angle_deg)]
    result = optimize.minimize(cost, np.array([start, 0.0, 0.0]), method="Powell", bounds=bounds,
                               options={"xtol": 0.05, "ftol": 1e-5})
    normal, point = _plane(result.x, centre)
    return MidPlane(tuple(float(v) for v in normal), tuple(float(v) for v in point),  # type: ignore[arg-type]
                    float(result.x[0]), float(result.x[1]), float(result.x[2]), -float(result.fun))


def mirror_maps(volumes: dict[str, np.ndarray], brain: np.ndarray, plane: MidPlane,
                spacing: Spacing) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each volume sampled at the mirror image of every brain voxel (linear interpolation).

    Returns the mirrored volumes (0 outside the brain) and ``valid``: brain voxels whose mirror
    point also lies in the brain (elsewhere a contralateral comparison means nothing).
    """
    sp = np.asarray(spacing, dtype=float)
    index = np.nonzero(brain)
    coords = (plane.reflect(np.stack(index, axis=1) * sp) / sp).T
    inside = ndimage.map_coordinates(brain.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
    valid = np.zeros(brain.shape, dtype=bool)
    valid[index] = inside >= 0.5
    mirrored = {}
    for name, volume in volumes.items():
        out = np.zeros(brain.shape, dtype=np.float32)
        out[index] = ndimage.map_coordinates(volume.astype(np.float32, copy=False), coords, order=1,
                                             mode="constant", cval=0.0)
        mirrored[name] = out
    return mirrored, valid
