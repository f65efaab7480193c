"""Diagnoser inputs: labels, the working grid, the whole-brain fallback of an empty prior, cache and dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vbiopsy.data.nifti import Volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.localize import LocalizationResult, Proposals
from vbiopsy.train.diagnosis_config import DiagnosisAugmentSettings, DiagnosisDataSettings
from vbiopsy.train.diagnosis_data import (DiagnosisDataset, DiagnosisSample, crop_padded, diagnosis_labels,
                                          paste_to_scan, sample_from_localization, to_working_grid, working_box,
                                          zscore_in_brain)

SCAN = (30, 24, 20)


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def _result(brain: np.ndarray, lesion: np.ndarray | None) -> LocalizationResult:
    """A localiser result with ``lesion`` as both priors (None: nothing found)."""
    mask = np.zeros(brain.shape, bool) if lesion is None else lesion
    prior = mask.astype(np.float32)
    return LocalizationResult(coarse_prior=prior, coarse_mask=mask, probability=prior, refined_mask=mask,
                              brain_mask=brain, proposals=Proposals.from_boxes(brain.shape, {}, "test"),
                              record={"proposer": "test", "fallback": None})


def test_labels_follow_the_diagnosis_order_and_exclude_missing_cells() -> None:
    frame = pd.DataFrame({"subject_id": ["a", "b", "c", "d", "e"],
                          "diagnosis": ["germinoma", "Glioblastoma, IDH-wildtype", None, "PCNSL", "other"]})
    labels = diagnosis_labels(frame)
    assert labels.subject_ids == ["a", "b", "d", "e"] and labels.y.tolist() == [2, 0, 1, 3]
    assert labels.excluded == {"c": "no diagnosis"} and labels.classes == ("glioma", "lymphoma", "germinoma", "other")
    with pytest.raises(InputError, match="meningioma"):
        diagnosis_labels(pd.DataFrame({"subject_id": ["x"], "diagnosis": ["meningioma"]}))


def test_working_box_is_a_square_axial_field_of_view_around_the_brain() -> None:
    brain = np.zeros(SCAN, bool)
    brain[5:25, 8:16, 4:18] = True  # 20 × 8 × 14 voxels
    start, stop = working_box(brain, (1.0, 2.0, 1.0), margin_mm=2.0)
    size_mm = (stop - start) * np.array([1.0, 2.0, 1.0])
    assert size_mm[0] == size_mm[1] == 24.0 and size_mm[2] == 18.0  # max(20, 16) + 4 mm; 14 + 4 mm
    assert (start <= [5, 8, 4]).all() and (stop >= [25, 16, 18]).all()
    box = crop_padded(np.ones(SCAN, np.float32), np.array([-2, 0, 0]), np.array([3, 2, 2]))
    assert box[:2].sum() == 0 and box[2:].all()  # zeros where the box leaves the scan
    with pytest.raises(InputError, match="empty"):
        working_box(np.zeros(SCAN, bool), (1, 1, 1), 0.0)


def test_resampling_keeps_constants_zscore_is_in_brain_and_paste_back_inverts_the_cut() -> None:
    assert np.allclose(to_working_grid(np.full((20, 20, 10), 3.0), (8, 8, 8)), 3.0)
    image = np.random.default_rng(0).normal(5, 2, SCAN).astype(np.float32)
    brain = _ball(SCAN, (15, 12, 10), 8)
    z = zscore_in_brain(image, brain)
    assert abs(z[brain].mean()) < 1e-5 and abs(z[brain].std() - 1) < 1e-4 and not z[~brain].any()
    smooth = np.indices(SCAN).sum(0).astype(np.float32)  # a linear ramp survives linear resampling
    start, stop = np.array([2, 2, 2]), np.array([28, 22, 18])
    record = {"box_start": start.tolist(), "box_stop": stop.tolist(), "scan_shape": list(SCAN)}
    back = paste_to_scan(to_working_grid(crop_padded(smooth, start, stop), (26, 20, 16)), record)
    np.testing.assert_allclose(back[2:28, 2:22, 2:18], smooth[2:28, 2:22, 2:18], atol=1e-3)
    assert not back[:2].any()


def test_an_empty_prior_falls_back_to_the_whole_brain_with_a_warning() -> None:
    settings = DiagnosisDataSettings(cohort=Path("x"), working_shape=(12, 12, 10), margin_mm=0.0)
    brain = _ball(SCAN, (15, 12, 10), 9)
    image = Volume(np.where(brain, 1.0, 0.0).astype(np.float32) + np.indices(SCAN)[0] * 0.01, np.eye(4))
    empty = sample_from_localization(image, _result(brain, None), settings, subject_id="p1")
    assert len(empty.record["warnings"]) == 2 and "no lesion found" in empty.record["warnings"][0]
    for name in ("coarse", "refined"):
        np.testing.assert_array_equal(empty.priors[name], empty.brain.astype(np.float32))
    lesion = _ball(SCAN, (18, 12, 10), 3)
    found = sample_from_localization(image, _result(brain, lesion), settings, seg=lesion, subject_id="p2")
    assert found.record["warnings"] == [] and set(found.priors) == {"coarse", "refined", "seg"}
    assert 0 < found.priors["refined"].sum() < 0.2 * found.brain.sum() and found.priors["refined"].max() <= 1


def test_samples_round_trip_the_cache_and_the_dataset_is_seeded_per_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    brain = np.ones((8, 8, 6), bool)
    sample = DiagnosisSample(rng.normal(size=(8, 8, 6)).astype(np.float32), brain,
                             {"refined": rng.random((8, 8, 6)).astype(np.float32)}, {"subject_id": "s", "warnings": []})
    sample.save(tmp_path / "s.npz", "key1")
    assert DiagnosisSample.load(tmp_path / "s.npz", "other") is None
    loaded = DiagnosisSample.load(tmp_path / "s.npz", "key1")
    assert loaded is not None and loaded.record == sample.record
    np.testing.assert_array_equal(loaded.priors["refined"], sample.priors["refined"])
    augment = DiagnosisAugmentSettings(noise_prob=1.0)
    data = DiagnosisDataset([loaded, sample], prior="refined", targets=np.array([2, 0]), augment=augment, seed=5)
    first = data[0]
    assert first["image"].shape == (1, 8, 8, 6) and first["prior"].shape == (1, 8, 8, 6) and int(first["target"]) == 2
    assert np.array_equal(data[0]["image"], first["image"])  # same (seed, epoch, item) → same draw
    data.set_epoch(1)
    assert not np.array_equal(data[0]["image"], first["image"])
    assert "prior" not in DiagnosisDataset([sample], prior="none")[0]
    with pytest.raises(InputError, match="'seg' prior"):
        DiagnosisDataset([sample], prior="seg")
    with pytest.raises(ConfigError, match="prior"):
        DiagnosisDataset([sample], prior="boxes")
    with pytest.raises(ConfigError, match="targets"):
        DiagnosisDataset([sample], targets=np.array([0, 1]))
