"""Back to native space: map any output-grid map onto a modality's native scan grid.

The pipeline records, per modality, the chain of transforms output grid → native scan. A map on
the output grid (a saliency volume, a predicted segmentation, the brain mask) is carried back by
resampling it on the native grid through the inverse chain: exact inverses for rigid and affine
transforms, the recorded inverse fields for SyN. Labels use nearest neighbour, other maps linear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vbiopsy.data.nifti import Grid, Volume
from vbiopsy.preprocess.resample import resample_array
from vbiopsy.preprocess.sitk_bridge import compose, inverse_record


def recorded_grid(entry: Mapping[str, Any]) -> Grid:
    """The :class:`Grid` of a ``{"shape", "affine"}`` record."""
    return Grid(tuple(int(s) for s in entry["shape"]), np.asarray(entry["affine"], dtype=float))  # type: ignore[arg-type]


def to_native(array: np.ndarray, record: Mapping[str, Any], modality: str, *, is_label: bool) -> Volume:
    """``array`` (on the record's output grid) resampled onto ``modality``'s native grid.

    Returns a canonical-RAS :class:`Volume` on the native scan's grid: labels keep their dtype,
    other maps are float32; zero where the native voxel maps outside the output grid.

    Raises:
        KeyError: ``modality`` was not preprocessed in this record.
        ValueError: ``array`` is not on the record's output grid.
    """
    if modality not in record["modalities"]:
        raise KeyError(f"modality {modality!r} is not in this record; it has {sorted(record['modalities'])}")
    output = recorded_grid(record["output_grid"])
    if tuple(array.shape) != output.shape:
        raise ValueError(f"array of shape {array.shape} is not on the output grid {output.shape}")
    native = recorded_grid(record["modalities"][modality]["native_grid"])
    chain = record["transforms"][modality]
    inverse = compose([inverse_record(r) for r in reversed(chain)])
    data = array if is_label else array.astype(np.float32, copy=False)
    mapped = resample_array(data, output.affine, native, inverse, interpolation="nearest" if is_label else "linear")
    return Volume(mapped, native.affine)
