"""Static figures (matplotlib, Agg backend) written as PNG files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.atomic import atomic_path

SEG_COLOURS: dict[int, tuple[float, float, float]] = {
    1: (0.85, 0.2, 0.2), 2: (0.2, 0.75, 0.3), 3: (0.95, 0.85, 0.1), 4: (0.3, 0.5, 0.95),
}
"""BraTS 2024 label → RGB used in every overlay (NETC red, SNFH green, ET yellow, RC blue)."""


def _show_grey(ax: Any, sl: np.ndarray) -> None:
    """A 2-D slice in grey, windowed to its 1st–99.5th percentiles, origin lower."""
    lo, hi = np.percentile(sl, [1, 99.5]) if np.any(sl) else (0.0, 1.0)
    ax.imshow(sl, cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6))


def _save(fig: Any, out: str | Path, title: str) -> Path:
    """Title, tight layout, atomic PNG write, close."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def tumour_slice_index(seg: np.ndarray | None, axis: int = 2) -> int:
    """Index of the slice along ``axis`` with the most tumour voxels (the middle one if none)."""
    if seg is None or not np.any(seg):
        return seg.shape[axis] // 2 if seg is not None else 0
    other = tuple(a for a in range(seg.ndim) if a != axis)
    return int(np.argmax(np.count_nonzero(seg, axis=other)))


def modality_montage(
    images: Mapping[str, np.ndarray],
    seg: np.ndarray | None,
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """Axial slice through the tumour for each modality (RAS arrays), with the segmentation outlined.

    Args:
        images: modality name → 3-D array (X, Y, Z) in canonical RAS, all on one grid.
        seg: BraTS 2024 labels on the same grid, or ``None``.
        out: PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not images:
        raise ValueError("modality_montage needs at least one image")
    first = next(iter(images.values()))
    z = tumour_slice_index(seg) if seg is not None else first.shape[2] // 2
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 3.0), squeeze=False)
    for ax, (name, vol) in zip(axes[0], images.items()):
        sl = vol[:, :, z].T  # rows = anterior-posterior, so display with origin lower
        _show_grey(ax, sl)
        if seg is not None:
            labels = seg[:, :, z].T
            for value, colour in SEG_COLOURS.items():
                if np.any(labels == value):
                    ax.contour(labels == value, levels=[0.5], colors=[colour], linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _save(fig, out, title)


def saliency_panels(
    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """One axial slice per patient: anatomy in grey, saliency as a heat map, tumour outlined.

    Args:
        panels: ``(caption, image, saliency, seg)`` per patient, 3-D RAS arrays on one grid each;
            the slice is the one with the most saliency mass.
        out: PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("saliency_panels needs at least one panel")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.1), squeeze=False)
    for ax, (caption, image, saliency, seg) in zip(axes[0], panels):
        z = int(np.argmax(np.abs(saliency).sum(axis=(0, 1))))
        sl = image[:, :, z].T
        _show_grey(ax, sl)
        heat = np.abs(saliency[:, :, z]).T
        top = float(np.percentile(heat[heat > 0], 99)) if np.any(heat > 0) else 1.0
        ax.imshow(np.ma.masked_less_equal(heat, 0.05 * top), cmap="inferno", origin="lower", alpha=0.6,
                  vmin=0.0, vmax=top)
        if seg is not None and np.any(seg[:, :, z]):
            ax.contour((seg[:, :, z] > 0).T, levels=[0.5], colors=["cyan"], linewidths=0.8)
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    return _save(fig, out, title)
