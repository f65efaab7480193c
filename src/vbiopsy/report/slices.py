"""Axial, coronal and sagittal slices through the tumour with segmentation, heat-map and prior overlays.

Arrays are 3-D (X, Y, Z) in canonical RAS on one grid (the patient's native scan grid); slices are
drawn in the neurological convention (patient's right on the right, anterior / superior up) with
the voxel spacing as aspect ratio, so anatomy is not stretched on anisotropic scans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.figures import SEG_COLOURS
from vbiopsy.report.plots import pyplot, png_bytes

PLANES = ("axial", "coronal", "sagittal")


def focus_point(seg: np.ndarray | None, saliency: np.ndarray | None, prior: np.ndarray | None,
                shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel the slices go through: tumour centroid, else saliency peak, else prior peak, else the centre."""
    if seg is not None and np.any(seg):
        return tuple(int(round(c)) for c in np.argwhere(seg > 0).mean(axis=0))  # type: ignore[return-value]
    for heat in (saliency, prior):
        if heat is not None and np.any(heat):
            return tuple(int(i) for i in np.unravel_index(int(np.argmax(np.abs(heat))), heat.shape))  # type: ignore[return-value]
    return tuple(int(s) // 2 for s in shape)  # type: ignore[return-value]


def plane_slice(volume: np.ndarray, plane: str, point: Sequence[int]) -> np.ndarray:
    """The 2-D slice of ``volume`` in ``plane`` through ``point``, transposed for ``imshow(origin="lower")``."""
    if plane == "axial":
        return volume[:, :, point[2]].T
    if plane == "coronal":
        return volume[:, point[1], :].T
    if plane == "sagittal":
        return volume[point[0], :, :].T
    raise InputError("plane", f"expected one of {', '.join(PLANES)}, got {plane!r}")


def _aspect(plane: str, spacing: Sequence[float]) -> float:
    """Height/width of one displayed pixel (row spacing / column spacing)."""
    columns, rows = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]
    return float(spacing[rows]) / float(spacing[columns])


def _check(name: str, array: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if array is not None and array.shape != shape:
        raise InputError(name, f"shape {array.shape} differs from the anatomy's {shape}")


HEAT_COLOURS = {"heat": "inferno", "prior": "viridis"}
"""Matplotlib colour map of each kind of non-label layer."""


def orthogonal_slices(anatomy: np.ndarray, spacing_mm: Sequence[float], *, seg: np.ndarray | None = None,
                      saliency: np.ndarray | None = None, prior: np.ndarray | None = None,
                      heat_maps: Mapping[str, np.ndarray] | None = None, title: str = "") -> bytes:
    """PNG of the three planes through the tumour: one row per available layer (segmentation outlines,
    each heat map, localiser prior), all on ``anatomy`` in grey. Every heat map is scaled to its own
    99th percentile; the slices go through the tumour centroid, else the first heat map's peak.

    Args:
        anatomy: (X, Y, Z) image in RAS.
        spacing_mm: voxel size (3,) in mm.
        seg: BraTS 2024 labels (X, Y, Z) or ``None``; prior: non-negative map or ``None``.
        saliency: shorthand for one heat map named "saliency" (drawn before ``heat_maps``).
        heat_maps: row title → map (X, Y, Z); the magnitude is drawn.
    """
    volume = np.asarray(anatomy, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError("anatomy", f"expected a 3-D array, got shape {volume.shape}")
    if len(spacing_mm) != 3 or min(float(s) for s in spacing_mm) <= 0:
        raise InputError("spacing_mm", f"expected 3 positive voxel sizes, got {list(spacing_mm)!r}")
    heat = {} if saliency is None else {"saliency": saliency}
    for name, array in (heat_maps or {}).items():
        if name in heat:
            raise ConfigError(f"heat map {name!r} given twice (as saliency and in heat_maps)")
        heat[name] = array
    for name, array in (("seg", seg), *heat.items(), ("prior", prior)):
        _check(name, array, volume.shape)
    point = focus_point(seg, next(iter(heat.values()), None), prior, volume.shape)
    candidates = [("segmentation", seg, "labels"), *((name, array, "heat") for name, array in heat.items()),
                  ("prior", prior, "prior")]
    layers = [layer for layer in candidates if layer[1] is not None] or [("anatomy", None, "anatomy")]
    lo, hi = np.percentile(volume[volume != 0] if np.any(volume) else volume, [1, 99.5])
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), 3, figsize=(8.4, 2.9 * len(layers)), squeeze=False)
    for row, (name, layer, kind) in zip(axes, layers):
        for ax, plane in zip(row, PLANES):
            aspect = _aspect(plane, spacing_mm)
            ax.imshow(plane_slice(volume, plane, point), cmap="gray", origin="lower", vmin=lo,
                      vmax=max(hi, lo + 1e-6), aspect=aspect)
            if layer is not None and kind == "labels":
                labels = plane_slice(layer, plane, point)
                for value, colour in SEG_COLOURS.items():
                    if np.any(labels == value):
                        ax.contour(labels == value, levels=[0.5], colors=[colour], linewidths=1.0)
            elif layer is not None:
                shown = np.abs(plane_slice(layer, plane, point)).astype(np.float32)
                top = float(np.percentile(np.abs(layer[layer != 0]), 99)) if np.any(layer) else 1.0
                ax.imshow(np.ma.masked_less_equal(shown, 0.05 * top), cmap=HEAT_COLOURS[kind], origin="lower",
                          alpha=0.55, vmin=0.0, vmax=max(top, 1e-12), aspect=aspect)
            ax.set_title(f"{plane} · {name}", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return png_bytes(fig)
