"""Coarse prior: stacked boxes, Gaussian smoothing in mm, grey dilation in mm."""

from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.localize import Box, PriorConfig, Proposals
from vbiopsy.localize.geometry import ball, main_component_centre
from vbiopsy.localize.prior import coarse_prior, smooth_and_dilate


def _proposals() -> Proposals:
    return Proposals.from_boxes((30, 30, 20), {z: [Box(10, 12, 18, 20, 1.0)] for z in range(4, 16)}, "test")


def test_ball_is_ellipsoidal_in_millimetres() -> None:
    assert ball(4.0, (1.0, 1.0, 1.0)).shape == (9, 9, 9)
    footprint = ball(4.0, (1.0, 1.0, 4.0))
    assert footprint.shape == (9, 9, 3) and footprint[4, 4, 0] and not footprint[0, 4, 0]
    assert ball(0.5, (2.0, 2.0, 2.0)).shape == (1, 1, 1)


def test_prior_lies_in_unit_range_inside_the_brain_and_records_parameters() -> None:
    brain = np.ones((30, 30, 20), bool)
    brain[:, :, :6] = False
    prior, record = coarse_prior(_proposals(), brain, (1.0, 1.0, 1.0), PriorConfig(sigma_mm=1.5, dilation_mm=2.0))
    assert prior.dtype == np.float32 and 0.0 <= prior.min() and prior.max() == pytest.approx(1.0, abs=0.03)
    assert not prior[~brain].any()
    assert record["sigma_mm"] == 1.5 and record["dilation_mm"] == 2.0 and record["mask_ml"] > 0


def test_dilation_widens_and_smoothing_softens_the_box_stack() -> None:
    stacked = np.zeros((30, 30, 20), np.float32)
    stacked[10:18, 12:20, 8:12] = 1.0
    plain = smooth_and_dilate(stacked, (1.0, 1.0, 1.0), 0.0, 0.0)
    assert np.array_equal(plain, stacked)
    dilated = smooth_and_dilate(stacked, (1.0, 1.0, 1.0), 0.0, 3.0)
    assert dilated[7, 15, 10] == 1.0 and dilated[6, 15, 10] == 0.0  # 3 mm beyond the edge, not 4
    smooth = smooth_and_dilate(stacked, (1.0, 1.0, 1.0), 2.0, 0.0)
    assert 0.3 < smooth[10, 15, 10] < 0.7  # the box edge is half-way
    both = smooth_and_dilate(stacked, (1.0, 1.0, 1.0), 2.0, 4.0)
    assert np.count_nonzero(both >= 0.5) > np.count_nonzero(smooth >= 0.5)


def test_empty_proposals_give_an_empty_prior() -> None:
    empty = Proposals.from_boxes((5, 5, 5), {}, "test")
    prior, record = coarse_prior(empty, np.ones((5, 5, 5), bool), (1.0, 1.0, 1.0), PriorConfig())
    assert not prior.any() and record["mask_ml"] == 0


def test_lesion_centre_is_the_weighted_centroid_of_the_heaviest_component() -> None:
    weights = np.zeros((20, 12, 10), np.float32)
    weights[2:6, 2:6, 2:5] = 1.0  # 48 units of mass
    weights[12:16, 4:8, 3:7] = 0.5
    weights[12:14, 4:8, 3:7] = 1.5  # 48 + 16 = 64 units, heavier at low x
    weights[18, 10, 8] = 9.0  # a single bright voxel: heavy per voxel, light in total
    centre = main_component_centre(weights)
    assert centre is not None
    # component 2: mass 1.5·32 at mean x 12.5 and 0.5·32 at mean x 14.5 → x = (48·12.5 + 16·14.5) / 64
    assert centre == pytest.approx([(48 * 12.5 + 16 * 14.5) / 64, 5.5, 4.5])
    assert main_component_centre(np.zeros((4, 4, 4))) is None
