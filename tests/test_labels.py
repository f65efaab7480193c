from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.data.labels import (
    LabelConvention, from_brats2024_to_brats2021, region_mask, to_brats2024, unknown_values,
)


def test_legacy_labels_convert_to_2024() -> None:
    legacy = np.array([0, 1, 2, 4, 3])
    assert to_brats2024(legacy, "brats2021").tolist() == [0, 1, 2, 3, 1]


def test_2024_labels_pass_through_and_round_trip_without_rc() -> None:
    labels = np.array([0, 1, 2, 3])
    assert to_brats2024(labels, LabelConvention.BRATS2024).tolist() == [0, 1, 2, 3]
    assert to_brats2024(from_brats2024_to_brats2021(labels), "brats2021").tolist() == [0, 1, 2, 3]
    assert from_brats2024_to_brats2021(np.array([4])).tolist() == [0]  # RC has no legacy label


def test_unknown_values_are_named() -> None:
    assert unknown_values(np.array([0, 1, 5, 7]), LabelConvention.BRATS2021) == [5, 7]
    with pytest.raises(ValueError, match=r"\[5\]"):
        to_brats2024(np.array([0, 5]), "brats2024")


def test_regions_are_brats_composites() -> None:
    labels = np.array([0, 1, 2, 3, 4])
    assert region_mask(labels, "TC").tolist() == [False, True, False, True, False]
    assert region_mask(labels, "WT").tolist() == [False, True, True, True, False]
    with pytest.raises(ValueError, match="unknown region"):
        region_mask(labels, "XX")
