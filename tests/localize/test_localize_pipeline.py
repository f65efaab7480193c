"""localize(): orchestration, fallbacks, bad input, config errors, NIfTI in and out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from localize_helpers import SPACING, recall_precision, synthetic_brain

from vbiopsy.data.nifti import load_volume, save_volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.localize import (
    LocalizerConfig,
    NoLesionError,
    ProposalError,
    Proposals,
    localize,
    localize_files,
    save_localization,
)


class BrokenProposer:
    name = "broken"

    def propose(self, scan):
        raise ProposalError("endpoint answered garbage")


class WrongShapeProposer:
    name = "wrong-shape"

    def propose(self, scan):
        return Proposals.from_boxes((3, 3, 3), {}, self.name)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_brain()


def test_localize_finds_the_lesion_and_records_every_stage(synthetic) -> None:
    result = localize(synthetic.images, spacing_mm=SPACING, brain_mask=synthetic.brain)
    assert result.found and recall_precision(result.refined_mask, synthetic.lesion)[0] > 0.9
    assert result.coarse_prior.shape == synthetic.brain.shape and result.coarse_prior.dtype == np.float32
    assert np.array_equal(result.refined_prior > 0, result.refined_mask)
    record = result.record
    assert record["proposer"] == "builtin-asymmetry" and record["fallback"] is None
    assert set(record["timings_s"]) == {"prepare", "propose", "prior", "refine", "total"}
    assert record["prior"]["sigma_mm"] == 2.0 and record["refine"]["samples"]["tumour"] > 0
    assert record["volumes_ml"]["refined_mask"] > 0 and record["proposals"]["n_boxes"] > 0
    json.dumps(record)


def test_a_failing_proposer_falls_back_to_the_builtin_and_records_it(synthetic) -> None:
    result = localize(synthetic.images, spacing_mm=SPACING, brain_mask=synthetic.brain, proposer=BrokenProposer())
    assert result.record["fallback"] == {"from": "broken", "reason": "endpoint answered garbage"}
    assert result.record["proposer"] == "builtin-asymmetry" and result.record["requested_proposer"] == "broken"
    with pytest.raises(ProposalError, match="garbage"):
        localize(synthetic.images, spacing_mm=SPACING, proposer=BrokenProposer(),
                 config={"on_proposer_failure": "error"})


def test_a_proposer_answering_for_another_grid_is_an_error(synthetic) -> None:
    with pytest.raises(ProposalError, match="returned proposals for \\(3, 3, 3\\)"):
        localize(synthetic.images, spacing_mm=SPACING, proposer=WrongShapeProposer())
    with pytest.raises(ConfigError, match="must implement SliceProposer"):
        localize(synthetic.images, spacing_mm=SPACING, proposer=object())  # type: ignore[arg-type]


def test_no_lesion_is_an_error_or_an_explicitly_empty_result() -> None:
    healthy = synthetic_brain(lesion=False)
    with pytest.raises(NoLesionError, match="no abnormal region found by 'builtin-asymmetry'"):
        localize(healthy.images, spacing_mm=SPACING)
    result = localize(healthy.images, spacing_mm=SPACING, config={"require_lesion": False})
    assert not result.found and not result.refined_mask.any() and result.record["found"] is False
    assert result.record["refine"]["skipped"] == "empty prior"


def test_bad_inputs_raise_clear_errors(synthetic) -> None:
    with pytest.raises(InputError, match="brain_mask: mask is empty"):
        localize(synthetic.images, spacing_mm=SPACING, brain_mask=np.zeros(synthetic.brain.shape, bool))
    with pytest.raises(InputError, match="differs from"):
        localize(dict(synthetic.images, t1c=synthetic.images["t1c"][:, :-2]), spacing_mm=SPACING)
    with pytest.raises(InputError, match="no brain found: the images are all background"):
        flat = {m: np.full(a.shape, 5.0, np.float32) for m, a in synthetic.images.items()}
        localize(flat, spacing_mm=SPACING)


@pytest.mark.parametrize(("config", "message"), [
    ({"prior": {"sigma_mm": -1}}, "prior.sigma_mm: sigma_mm must be in \\[0, 50\\], got -1"),
    ({"refine": {"background_threshold": 0.95}}, "background_threshold \\(0.95\\) must be below"),
    ({"modalities": "t1"}, "modalities must include one of"),
    ({"refine": {"hiden": [8]}}, "refine.hiden: Extra inputs are not permitted"),
])
def test_config_errors_name_the_key_and_value(synthetic, config, message) -> None:
    with pytest.raises(ConfigError, match=message):
        localize(synthetic.images, spacing_mm=SPACING, config=config)
    assert LocalizerConfig().refine.union_threshold == 0.9


def test_files_in_priors_out(tmp_path, synthetic) -> None:
    affine = np.diag([*SPACING, 1.0])
    paths = {m: save_volume(a, affine, tmp_path / f"{m}.nii.gz") for m, a in synthetic.images.items()}
    result, got_affine = localize_files(paths)
    assert np.allclose(got_affine, affine) and result.found
    written = save_localization(result, got_affine, tmp_path / "out", prefix="p1_")
    assert sorted(p.name for p in written.values()) == ["p1_coarse_prior.nii.gz", "p1_localization.json",
                                                        "p1_refined_mask.nii.gz", "p1_refined_prior.nii.gz"]
    back = load_volume(written["refined_mask"], dtype=np.uint8)
    assert np.array_equal(back.array > 0, result.refined_mask)
    assert json.loads(written["record"].read_text())["proposer"] == "builtin-asymmetry"
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_files_on_different_grids_are_rejected_naming_the_file(tmp_path, synthetic) -> None:
    save_volume(synthetic.images["t1c"], np.diag([*SPACING, 1.0]), tmp_path / "t1c.nii.gz")
    shifted = np.diag([*SPACING, 1.0])
    shifted[0, 3] = 5.0
    nib.save(nib.Nifti1Image(synthetic.images["flair"], shifted), str(tmp_path / "flair.nii.gz"))
    with pytest.raises(InputError, match="flair.nii.gz: not on the grid of t1c"):
        localize_files({"t1c": tmp_path / "t1c.nii.gz", "flair": tmp_path / "flair.nii.gz"})
