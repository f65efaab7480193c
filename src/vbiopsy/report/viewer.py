"""Interactive slice viewer embedded in a patient report: downsampled uint8 volumes + plain JavaScript.

Volumes (X, Y, Z, canonical RAS) are reduced by an integer stride so the longest side is at most
``max_side`` voxels, converted to uint8 (anatomy windowed to its 1st–99.5th percentiles, heat maps
scaled to their 99th percentile, label maps kept as labels) and embedded base64 in a JSON block;
``assets/viewer.js`` draws them on a canvas with a slider, keyboard and mouse-wheel navigation and
one checkbox per overlay; "selectable" overlays (several heat maps) are instead drawn one at a time,
picked from a list, with their caption under the canvas. Nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any, Literal

import numpy as np

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.figures import SEG_COLOURS
from vbiopsy.report.html import escape

Kind = Literal["anatomy", "labels", "heat"]
VIEWER_ID = "vb-viewer"


def stride_for(shape: tuple[int, ...], max_side: int) -> int:
    """Smallest integer stride that brings the longest side of ``shape`` to at most ``max_side``."""
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 8:
        raise ConfigError(f"max_side must be an integer >= 8, got {max_side!r}")
    return max(1, -(-max(shape) // max_side))


def to_uint8(volume: np.ndarray, kind: Kind) -> np.ndarray:
    """``volume`` as uint8 for display: windowed anatomy, scaled heat map, or labels (0–255)."""
    data = np.asarray(volume)
    if kind == "labels":
        if np.any(data < 0) or np.any(data > 255):
            raise InputError("labels", f"values must be in 0..255, got range {data.min()}..{data.max()}")
        return data.astype(np.uint8)
    values = np.abs(data.astype(np.float32)) if kind == "heat" else data.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError(kind, "volume has NaN or infinite values")
    inside = values[values != 0]
    if kind == "heat":
        lo, hi = 0.0, float(np.percentile(inside, 99)) if inside.size else 1.0
    elif kind == "anatomy":
        lo, hi = (np.percentile(inside, [1, 99.5]) if inside.size else (0.0, 1.0))
    else:
        raise ConfigError(f"kind must be anatomy, labels or heat, got {kind!r}")
    scaled = (values - lo) / max(float(hi) - float(lo), 1e-12)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def encode_volume(volume: np.ndarray, kind: Kind, stride: int) -> dict[str, Any]:
    """``{"shape": [x, y, z], "kind": kind, "data": base64 of C-order uint8}`` of ``volume[::s, ::s, ::s]``."""
    data = np.asarray(volume)
    if data.ndim != 3:
        raise InputError(kind, f"expected a 3-D volume, got shape {data.shape}")
    small = to_uint8(data[::stride, ::stride, ::stride], kind)
    return {"shape": list(small.shape), "kind": kind,
            "data": base64.b64encode(np.ascontiguousarray(small).tobytes()).decode("ascii")}


def viewer_script() -> str:
    """The viewer's JavaScript (``report/assets/viewer.js``)."""
    return (files("vbiopsy.report") / "assets" / "viewer.js").read_text(encoding="utf-8")


def viewer_html(anatomy: dict[str, np.ndarray], overlays: dict[str, tuple[np.ndarray, Kind]],
                spacing_mm: tuple[float, float, float], *, selectable: Mapping[str, str] | None = None,
                max_side: int = 96) -> str:
    """The viewer's HTML (controls, canvas, embedded data); add :func:`viewer_script` to the page.

    Args:
        anatomy: modality → (X, Y, Z) image; all on one grid.
        overlays: name → (array on that grid, ``"labels"`` or ``"heat"``).
        spacing_mm: voxel size of the grid (mm); the viewer keeps the physical aspect ratio.
        selectable: overlay name → caption, for overlays drawn one at a time from a list (``#vb-heat``, first
            one shown, "none" last) instead of with a checkbox; the caption of the one drawn is shown in
            ``#vb-heat-caption``. ``None`` or empty: a checkbox for every overlay.
        max_side: longest side after downsampling (voxels).
    """
    if not anatomy:
        raise InputError("viewer", "needs at least one anatomical image")
    choices = dict(selectable or {})
    unknown = [name for name in choices if name not in overlays]
    if unknown:
        raise ConfigError(f"selectable overlays {unknown!r} are not among the overlays {list(overlays)!r}")
    shape = next(iter(anatomy.values())).shape
    for name, array in [*anatomy.items(), *((k, v[0]) for k, v in overlays.items())]:
        if array.shape != shape:
            raise InputError(name, f"shape {array.shape} differs from the viewer grid {shape}")
    stride = stride_for(shape, max_side)
    payload: dict[str, Any] = {
        "spacing": [float(s) * stride for s in spacing_mm],
        "images": {name: encode_volume(array, "anatomy", stride) for name, array in anatomy.items()},
        "overlays": {name: encode_volume(array, kind, stride) for name, (array, kind) in overlays.items()},
        "labelColours": {str(k): [int(255 * c) for c in rgb] for k, rgb in SEG_COLOURS.items()}}
    options = "".join(f'<option value="{escape(n)}">{escape(n)}</option>' for n in anatomy)
    boxes = "".join(f'<label><input type="checkbox" class="vb-overlay" value="{escape(n)}" checked> {escape(n)}</label> '
                    for n in overlays if n not in choices)
    picker = caption = ""
    if choices:
        payload["captions"] = choices
        listed = "".join(f'<option value="{escape(n)}">{escape(n)}</option>' for n in choices)
        picker = f'<label>heat map <select id="vb-heat">{listed}<option value="">none</option></select></label> '
        caption = f'<p id="vb-heat-caption" class="note">{escape(next(iter(choices.values())))}</p>'
    planes = "".join(f'<option value="{p}">{p}</option>' for p in ("axial", "coronal", "sagittal"))
    data = json.dumps(payload).replace("</", "<\\/")
    return (f'<div id="{VIEWER_ID}" class="viewer">'
            f'<div class="vb-controls"><label>image <select id="vb-image">{options}</select></label> '
            f'<label>plane <select id="vb-plane">{planes}</select></label> {boxes}{picker}</div>'
            f'<canvas id="vb-canvas" tabindex="0" width="384" height="384" '
            f'style="background:#000;outline:1px solid #99a;image-rendering:pixelated"></canvas>'
            f'<div><input id="vb-slider" type="range" min="0" max="0" value="0" style="width:384px"> '
            f'<span id="vb-slice-label">slice</span></div>{caption}'
            f'<script type="application/json" id="vb-data">{data}</script></div>')
