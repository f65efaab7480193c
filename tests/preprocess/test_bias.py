"""N4 bias-field correction removes a planted smooth bias field."""

from __future__ import annotations

import numpy as np

from vbiopsy.data.nifti import Volume
from vbiopsy.preprocess import BiasFieldConfig, n4_correct


def _head(shape: tuple[int, int, int] = (32, 32, 24)) -> tuple[np.ndarray, np.ndarray]:
    """A two-tissue ellipsoid (values 600 and 1000) and its mask."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    mask = radius < 0.85
    image = np.where(radius < 0.5, 1000.0, 600.0) * mask
    return image.astype(np.float32), mask


def test_n4_removes_a_planted_bias_field() -> None:
    clean, mask = _head()
    axis = np.linspace(-1, 1, clean.shape[0])[:, None, None]
    biased = clean * np.exp(0.3 * axis).astype(np.float32)
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    corrected, info = n4_correct(Volume(biased, affine), BiasFieldConfig(shrink_factor=2))
    before = np.std(np.log(biased[mask] / clean[mask]))
    after_ratio = corrected.array[mask] / clean[mask]
    after = np.std(np.log(after_ratio / np.median(after_ratio)))
    assert after < 0.35 * before, (before, after)
    assert corrected.array.shape == clean.shape and corrected.array.dtype == np.float32
    np.testing.assert_array_equal(corrected.affine, affine)
    assert info["shrink_factor"] == 2 and info["bias_range"][0] < info["bias_range"][1]


def test_n4_on_nonzero_mask_keeps_background_zero() -> None:
    clean, _ = _head()
    corrected, info = n4_correct(Volume(clean, np.eye(4)), BiasFieldConfig(mask="nonzero", iterations=(20,)))
    assert info["mask"] == "nonzero"
    assert np.all(corrected.array[clean == 0] == 0)
