"""The registration template: the MNI152 2009a T1 bundled with nilearn, or a user's template.

The bundled file is located with :func:`vbiopsy.data.phantoms.template.template_dir` (nothing is
downloaded). It is skull-stripped, so its brain mask is ``T1 > 0``; a user template is expected to
be skull-stripped too, or to come with its own brain mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vbiopsy.data.nifti import load_volume
from vbiopsy.data.phantoms.template import TEMPLATE_FILES, TEMPLATE_NAME, template_dir
from vbiopsy.errors import InputError
from vbiopsy.preprocess.sitk_bridge import to_sitk


@dataclass(frozen=True)
class Atlas:
    """A template image and its brain mask (SimpleITK, same grid) and where they came from."""

    name: str
    image: sitk.Image
    mask: sitk.Image
    source: str


def bundled_template_path() -> Path:
    """Path of the MNI152 2009a T1 file inside the installed nilearn package."""
    return template_dir() / TEMPLATE_FILES["t1"]


@functools.lru_cache(maxsize=4)
def load_atlas(template: Path | None = None, template_mask: Path | None = None) -> Atlas:
    """Load the bundled template (``template=None``) or a user's, with its brain mask.

    Raises:
        InputError: unreadable template or mask, or a mask that is empty or on another grid.
    """
    path = bundled_template_path() if template is None else Path(template)
    volume = load_volume(path)
    if template_mask is None:
        mask_array = (volume.array > 0).astype(np.uint8)
    else:
        mask_volume = load_volume(template_mask, dtype=np.uint8)
        if mask_volume.array.shape != volume.array.shape or not np.allclose(mask_volume.affine, volume.affine,
                                                                            atol=1e-3):
            raise InputError(template_mask, f"template mask is not on the grid of the template {path}")
        mask_array = (mask_volume.array > 0).astype(np.uint8)
    if not mask_array.any():
        raise InputError(template_mask or path, "template brain mask is empty")
    name = TEMPLATE_NAME if template is None else path.name
    return Atlas(name, to_sitk(volume.array.astype(np.float32), volume.affine),
                 to_sitk(mask_array, volume.affine), str(path))
