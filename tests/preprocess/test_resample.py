"""Resampling to a target spacing: grid shape/spacing, images linear, labels nearest."""

from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.data.nifti import Grid, Volume
from vbiopsy.preprocess import grid_at_spacing, resample_volume


def test_grid_at_spacing_keeps_field_of_view_and_centre() -> None:
    affine = np.array([[0.9, 0, 0, -100], [0, 0.9, 0, -120], [0, 0, 5.5, -60], [0, 0, 0, 1.0]])
    grid = Grid((200, 220, 26), affine)
    new = grid_at_spacing(grid, (1.0, 1.0, 1.0))
    assert new.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert new.shape == (180, 198, 143)
    centre = lambda g: g.affine[:3, :3] @ ((np.array(g.shape) - 1) / 2) + g.affine[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(new), centre(grid), atol=1e-9)


def test_oblique_orientation_is_kept() -> None:
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.0, 2.0, 3.0])
    new = grid_at_spacing(Grid((10, 10, 10), affine), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(new.affine[:3, :3], rot, atol=1e-12)


def test_labels_use_nearest_and_images_linear() -> None:
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = 3
    labels[3:5, 3:5, 3:5] = 1
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    out = resample_volume(Volume(labels, affine), (2.0, 2.0, 2.0), is_label=True)
    assert out.array.shape == (16, 16, 16) and out.array.dtype == np.uint8
    assert set(np.unique(out.array)) == {0, 1, 3}
    assert np.count_nonzero(out.array == 3) + np.count_nonzero(out.array == 1) == 8 * 64
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 8, 8)).copy()
    image = resample_volume(Volume(ramp, affine), (2.0, 2.0, 2.0)).array
    assert image.dtype == np.float32
    inner = image[2:-2, 4, 4]  # away from the edges, linear interpolation of a ramp is a ramp
    np.testing.assert_allclose(np.diff(inner), 0.5, atol=1e-5)


def test_bspline_stays_in_input_range() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 8)).astype(np.float32)
    out = resample_volume(Volume(image, np.eye(4)), (0.5, 0.5, 0.5), interpolation="bspline").array
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6
