"""Z-score inside the brain after percentile clipping."""

from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.preprocess import zscore


def test_brain_has_mean_zero_std_one_and_background_zero() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(500, 80, size=(20, 20, 20)).astype(np.float32)
    image[0, 0, 0] = 1e6  # one hot voxel must not set the scale
    mask = np.zeros(image.shape, dtype=bool)
    mask[2:18, 2:18, 2:18] = True
    mask[0, 0, 0] = True
    out, stats = zscore(image, mask)
    assert out[mask].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[mask].std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[~mask] == 0) and out.dtype == np.float32
    assert stats["clip"][1] < 1e6 and out.max() < 5


def test_empty_mask_and_bad_percentiles_raise() -> None:
    image = np.ones((4, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="empty mask"):
        zscore(image, np.zeros(image.shape, bool))
    with pytest.raises(ValueError, match="percentiles"):
        zscore(image, np.ones(image.shape, bool), lower_percentile=60, upper_percentile=40)
