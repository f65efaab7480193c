"""Boxes, per-slice proposals and their stacking into a volume."""

from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.localize import Box, Proposals, SliceBoxes, SliceProposer, stack_boxes
from vbiopsy.localize.builtin import BuiltinProposer


def test_box_validates_and_names_the_bad_value() -> None:
    assert Box(1, 2, 4, 6, 0.5).area == 12
    with pytest.raises(ValueError, match="x0 < x1"):
        Box(4, 2, 4, 6)
    with pytest.raises(ValueError, match="confidence must be in \\(0, 1\\], got 1.5"):
        Box(0, 0, 2, 2, 1.5)
    with pytest.raises(ValueError, match="integer voxel index, got 1.5"):
        Box(1.5, 0, 2, 2)  # type: ignore[arg-type]


def test_proposals_need_one_slice_per_z_and_boxes_inside_the_slice() -> None:
    with pytest.raises(ValueError, match="one SliceBoxes per axial slice"):
        Proposals((4, 4, 3), (SliceBoxes(0), SliceBoxes(2), SliceBoxes(1)), "test")
    with pytest.raises(ValueError, match="leaves the slice of 4x4 voxels"):
        Proposals.from_boxes((4, 4, 3), {1: [Box(2, 0, 5, 2)]}, "test")


def test_stack_takes_the_maximum_confidence_where_boxes_overlap() -> None:
    props = Proposals.from_boxes((6, 5, 3), {1: [Box(0, 0, 3, 3, 0.4), Box(2, 2, 5, 4, 0.8)]}, "test")
    volume = stack_boxes(props)
    assert volume.shape == (6, 5, 3) and volume.dtype == np.float32
    assert volume[0, 0, 1] == pytest.approx(0.4) and volume[2, 2, 1] == pytest.approx(0.8)
    assert volume[:, :, 0].sum() == 0 and volume[:, :, 2].sum() == 0
    assert np.count_nonzero(volume) == 9 + 6 - 1
    assert props.n_boxes == 2 and not props.empty


def test_embedding_a_crop_moves_boxes_to_the_full_grid() -> None:
    props = Proposals.from_boxes((4, 4, 2), {1: [Box(0, 1, 2, 3)]}, "crop", {"note": 1})
    full = props.embedded((3, 5, 7), (10, 12, 10))
    assert full.shape == (10, 12, 10) and full.slices[8].boxes == (Box(3, 6, 5, 8),)
    summary = full.summary()
    assert summary["n_boxes"] == 1 and summary["boxes"] == {"8": [Box(3, 6, 5, 8).to_dict()]} and summary["note"] == 1


def test_builtin_proposer_implements_the_protocol() -> None:
    assert isinstance(BuiltinProposer(), SliceProposer)
    assert not isinstance(object(), SliceProposer)
