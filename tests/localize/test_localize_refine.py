"""Refinement: per-scan voxel MLP on high-confidence pseudo-labels, united with the prior's core."""

from __future__ import annotations

import numpy as np
import pytest
from localize_helpers import SPACING, phantom_patients, recall_precision, spacing_of, synthetic_brain

from vbiopsy.localize import Box, LocalizerConfig, Proposals, RefineConfig, localize, prepare_scan
from vbiopsy.localize.prior import coarse_prior
from vbiopsy.localize.refine import refine_prior

GENEROUS = {"prior": {"sigma_mm": 3.0, "dilation_mm": 12.0}}
"""A coarse prior 2 voxels wider than the boxes on the ~6 mm phantoms: room for the MLP to prune."""


def _spacing(patient) -> tuple[float, float, float]:
    return spacing_of(patient.affine)


def test_refined_prior_covers_the_planted_lesions() -> None:
    for patient in phantom_patients():
        result = localize(patient.images, spacing_mm=_spacing(patient))
        recall, _ = recall_precision(result.refined_mask, patient.seg > 0)
        assert recall >= 0.9, patient.index
        assert result.record["refine"]["loss_final"] < result.record["refine"]["loss_first"]


def test_refinement_improves_precision_over_a_generous_coarse_prior_without_losing_recall() -> None:
    coarse_precision, refined_precision = [], []
    for patient in phantom_patients():
        truth = patient.seg > 0
        result = localize(patient.images, spacing_mm=_spacing(patient), config=GENEROUS)
        coarse = recall_precision(result.coarse_mask, truth)
        refined = recall_precision(result.refined_mask, truth)
        assert refined[0] >= coarse[0] - 0.01, patient.index
        coarse_precision.append(coarse[1])
        refined_precision.append(refined[1])
    assert np.mean(refined_precision) > np.mean(coarse_precision) + 0.03
    assert sum(r > c for r, c in zip(refined_precision, coarse_precision)) >= len(phantom_patients()) // 2


def test_same_seed_same_result_other_seed_other_network() -> None:
    patient = phantom_patients()[0]
    first = localize(patient.images, spacing_mm=_spacing(patient))
    again = localize(patient.images, spacing_mm=_spacing(patient))
    assert np.array_equal(first.probability, again.probability)
    assert np.array_equal(first.refined_mask, again.refined_mask)
    assert first.record["refine"]["loss_final"] == again.record["refine"]["loss_final"]
    other = localize(patient.images, spacing_mm=_spacing(patient), config={"refine": {"seed": 1}})
    assert not np.array_equal(first.probability, other.probability)


@pytest.fixture(scope="module")
def synthetic_scan():
    s = synthetic_brain()
    return s, prepare_scan(s.images, SPACING, brain_mask=s.brain)


def _box_prior(scan, confidence: float, z_range: range) -> np.ndarray:
    boxes = {z: [Box(20, 14, 28, 24, confidence)] for z in z_range}
    prior, _ = coarse_prior(Proposals.from_boxes(scan.shape, boxes, "test"), scan.brain, scan.spacing,
                            LocalizerConfig().prior)
    return prior


def test_too_few_pseudo_labels_skip_the_mlp_and_say_so(synthetic_scan) -> None:
    _, scan = synthetic_scan
    prior = _box_prior(scan, 1.0, range(8, 18))
    probability, refined, record = refine_prior(scan, prior, RefineConfig(min_samples=100_000))
    assert "too few pseudo-labelled voxels" in record["skipped"]
    assert not probability.any() and np.array_equal(refined, prior >= 0.9)


def test_disabled_refinement_returns_the_core(synthetic_scan) -> None:
    _, scan = synthetic_scan
    prior = _box_prior(scan, 1.0, range(10, 16))
    _, refined, record = refine_prior(scan, prior, RefineConfig(enabled=False))
    assert record["skipped"] == "disabled" and np.array_equal(refined, (prior >= 0.9) & scan.brain)


def test_an_unsure_proposer_gets_thresholds_relative_to_its_peak(synthetic_scan) -> None:
    _, scan = synthetic_scan
    prior = _box_prior(scan, 0.6, range(8, 18))
    assert prior.max() < 0.9
    _, refined, record = refine_prior(scan, prior, RefineConfig())
    assert record["thresholds_scaled_by_peak"] == pytest.approx(float(prior.max()))
    assert record["samples"]["tumour"] > 0 and refined.any()
    assert record["tumour_threshold"] == pytest.approx(0.9 * float(prior.max()))


def test_position_feature_is_optional_and_named(synthetic_scan) -> None:
    _, scan = synthetic_scan
    prior = _box_prior(scan, 1.0, range(8, 18))
    _, _, plain = refine_prior(scan, prior, RefineConfig(steps=20))
    _, _, with_position = refine_prior(scan, prior, RefineConfig(steps=20, position_feature=True))
    assert "distance-to-prior-centre" not in plain["features"]
    assert with_position["features"][-1] == "distance-to-prior-centre"
    assert len(plain["features"]) == 2 * (1 + 2 + 1)  # per modality: z, two local means, asymmetry
