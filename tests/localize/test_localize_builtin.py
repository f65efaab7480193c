"""The built-in proposer: robust intensity outliers checked against the contralateral hemisphere."""

from __future__ import annotations

import numpy as np
import pytest
from localize_helpers import SPACING, phantom_patients, recall_precision, spacing_of, synthetic_brain

from vbiopsy.localize import BuiltinConfig, BuiltinProposer, prepare_scan, stack_boxes
from vbiopsy.localize.abnormality import cue_maps


@pytest.fixture(scope="module")
def with_distractors():
    return synthetic_brain(distractors=True)


def test_contralateral_comparison_separates_a_one_sided_lesion_from_symmetric_bright_tissue(with_distractors) -> None:
    s = with_distractors
    scan = prepare_scan(s.images, SPACING, brain_mask=s.brain)
    z, asym = scan.z["flair"], scan.asymmetry["flair"]
    # both are equally hyperintense against the brain's own distribution…
    assert z[s.lesion].mean() > 2.5 and z[s.distractors].mean() > 2.5
    # …but only the lesion differs from its mirror point
    assert asym[s.lesion].mean() > 2.0 and abs(asym[s.distractors].mean()) < 0.8
    boxes = stack_boxes(BuiltinProposer().propose(scan)) > 0
    assert recall_precision(boxes, s.lesion)[0] > 0.9
    assert np.count_nonzero(boxes & s.distractors) == 0


def test_without_the_asymmetry_requirement_the_symmetric_blobs_are_boxed_too(with_distractors) -> None:
    s = with_distractors
    scan = prepare_scan(s.images, SPACING, brain_mask=s.brain)
    loose = BuiltinConfig(min_asymmetry=-10.0, seed_threshold=1.0, low_threshold=0.5, keep_fraction=0.0, opening_mm=0.0)
    boxes = stack_boxes(BuiltinProposer(loose).propose(scan)) > 0
    assert np.count_nonzero(boxes & s.distractors) > 0.5 * s.distractors.sum()


def test_cues_follow_the_modalities(with_distractors) -> None:
    s = with_distractors
    both = cue_maps(prepare_scan(s.images, SPACING, brain_mask=s.brain))
    assert both.cues == ("bright:flair", "mismatch:flair-t1c")
    t1c_only = cue_maps(prepare_scan(s.images, SPACING, brain_mask=s.brain, modalities=("t1c",)))
    assert t1c_only.cues == ("enhance:t1c", "hypo:t1c")
    assert not both.score[~s.brain].any()


def test_a_healthy_symmetric_brain_gets_no_box() -> None:
    healthy = synthetic_brain(lesion=False)
    proposals = BuiltinProposer().propose(prepare_scan(healthy.images, SPACING, brain_mask=healthy.brain))
    assert proposals.empty and proposals.record["kept_regions"] == 0


def test_boxes_cover_the_planted_phantom_tumours() -> None:
    for patient in phantom_patients():
        truth = patient.seg > 0
        scan = prepare_scan(patient.images, spacing_of(patient.affine))
        proposals = BuiltinProposer().propose(scan)
        boxes = stack_boxes(proposals) > 0
        assert recall_precision(boxes, truth)[0] > 0.85, patient.index
        assert proposals.record["lesion_ml"] and proposals.record["midplane"]["correlation"] > 0.8
