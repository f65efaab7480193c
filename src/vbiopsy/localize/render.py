"""Axial slices as PNG images for a vision-language model, and pixel boxes back to voxels.

Display convention (radiological, what a VLM has seen in training): anterior at the top, the
patient's right on the image's left. On a canonical-RAS slice ``array[:, :, z]`` (axis 0 runs
towards the patient's right, axis 1 towards anterior) the image pixel ``(row, col)`` shows voxel
``(x, y) = (X − 1 − col // k, Y − 1 − row // k)`` for an integer zoom ``k``.

PNG encoding uses only the standard library (``zlib``): 8-bit greyscale, no interlace.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from vbiopsy.localize.boxes import Box


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 greyscale ``image`` (rows × columns)."""
    if image.ndim != 2 or image.dtype != np.uint8 or min(image.shape) < 1:
        raise ValueError(f"encode_png needs a non-empty 2-D uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(height))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def data_url(png: bytes) -> str:
    """``data:image/png;base64,…`` URL of PNG bytes (the OpenAI ``image_url`` form)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def intensity_window(volume: np.ndarray, brain: np.ndarray, low_pct: float = 0.5,
                     high_pct: float = 99.5) -> tuple[float, float]:
    """Display window of a modality: its brain percentiles (one window for all slices)."""
    values = volume[brain]
    low, high = (np.percentile(values, [low_pct, high_pct]) if values.size else (0.0, 1.0))
    return float(low), float(high) if high > low else float(low) + 1.0


@dataclass(frozen=True)
class SliceView:
    """How a slice of ``nx × ny`` voxels maps to an image zoomed ``upscale`` times."""

    nx: int
    ny: int
    upscale: int = 1

    @property
    def width(self) -> int:
        return self.nx * self.upscale

    @property
    def height(self) -> int:
        return self.ny * self.upscale

    def image(self, section: np.ndarray, window: tuple[float, float]) -> np.ndarray:
        """uint8 display image (height × width) of a (nx, ny) slice under ``window``."""
        if section.shape != (self.nx, self.ny):
            raise ValueError(f"slice shape {section.shape} != ({self.nx}, {self.ny})")
        low, high = window
        scaled = np.clip((section.astype(np.float32) - low) / (high - low), 0.0, 1.0)
        display = np.rint(scaled * 255).astype(np.uint8)[::-1, ::-1].T  # rows: anterior first; cols: right first
        if self.upscale > 1:
            display = np.repeat(np.repeat(display, self.upscale, axis=0), self.upscale, axis=1)
        return np.ascontiguousarray(display)

    def to_voxels(self, x_min: float, y_min: float, x_max: float, y_max: float, confidence: float) -> Box | None:
        """The voxel box covering the pixel box ``[x_min, x_max) × [y_min, y_max)`` (columns × rows).

        Returns ``None`` when the box covers no whole or partial voxel (zero area after rounding).
        """
        k = float(self.upscale)
        col0, col1 = math.floor(x_min / k), math.ceil(x_max / k)
        row0, row1 = math.floor(y_min / k), math.ceil(y_max / k)
        x0, x1 = max(self.nx - col1, 0), min(self.nx - col0, self.nx)
        y0, y1 = max(self.ny - row1, 0), min(self.ny - row0, self.ny)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, x1, y1, confidence)
