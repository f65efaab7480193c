"""Lesion crops for the diagnoser's crop branch: centre of mass (vs SciPy), the crop's placement and resolution,
the empty-prior fallback, the training-time window and its augmentation, the dataset item (with the lesion
measurements) and the config rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vbiopsy.data.nifti import Volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.localize import LocalizationResult, Proposals
from vbiopsy.localize.lesion_measurements import MEASUREMENTS, lesion_measurements
from vbiopsy.train.diagnosis_augment import apply_augmentation, apply_crop_augmentation, augment_pair
from vbiopsy.train.diagnosis_config import (DiagnosisAugmentSettings, DiagnosisDataSettings, LesionCropSettings,
                                            LesionMeasurementSettings, MeasurementThresholds, load_diagnosis_config)
from vbiopsy.train.diagnosis_crop import centre_of_mass, crop_box, crop_window, cut_crop, lesion_crops
from vbiopsy.train.diagnosis_data import DiagnosisDataset, DiagnosisSample, sample_from_localization

SCAN = (30, 28, 24)


def _ramp(axis: int, shape: tuple[int, ...] = SCAN) -> np.ndarray:
    """A volume whose value is its voxel index along ``axis``."""
    return np.indices(shape)[axis].astype(np.float32)


def test_centre_of_mass_matches_scipy_and_is_none_for_an_empty_prior() -> None:
    rng = np.random.default_rng(0)
    weights = rng.random(SCAN) * (rng.random(SCAN) > 0.7)
    np.testing.assert_allclose(centre_of_mass(weights), ndimage.center_of_mass(weights), rtol=1e-10)
    assert centre_of_mass(np.zeros(SCAN)) is None
    with pytest.raises(InputError, match="3-D"):
        centre_of_mass(np.zeros((3, 3)))


def test_a_crop_is_centred_on_the_point_and_resampled_to_its_own_spacing() -> None:
    centre = (14.0, 10.0, 12.0)
    start, stop = crop_box(centre, (1.0, 1.0, 1.0), (8, 8, 8), 2.0)  # 8 × 2 mm = 16 scan voxels of 1 mm
    assert (stop - start).tolist() == [16, 16, 16] and start.tolist() == [6, 2, 4]
    for axis in range(3):
        crop = cut_crop(_ramp(axis), centre, (1.0, 1.0, 1.0), (8, 8, 8), 2.0)
        # a linear ramp survives smoothing and linear resampling: crop voxel i covers scan voxels 2i, 2i + 1
        profile = crop.mean(axis=tuple(a for a in range(3) if a != axis))
        np.testing.assert_allclose(profile[1:-1], start[axis] + 2 * np.arange(1, 7) + 0.5, atol=1e-4)
    # at the scan's own spacing the crop is a plain cut, zero-padded where it leaves the scan
    corner = cut_crop(_ramp(0) + 1, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (6, 6, 6), 1.0)
    assert corner[:3].sum() == 0 and np.array_equal(corner[3:, 3, 3], [1.0, 2.0, 3.0])


def test_lesion_crops_zscore_each_modality_centre_each_prior_and_fall_back_to_the_brain() -> None:
    brain = np.zeros(SCAN, bool)
    brain[4:26, 4:24, 3:21] = True
    lesion = np.zeros(SCAN, np.float32)
    lesion[18:22, 6:10, 14:18] = 1.0
    images = {"t1c": 5.0 + 3.0 * _ramp(0), "flair": 100.0 + _ramp(2) ** 2}
    settings = LesionCropSettings(shape=(8, 8, 8), spacing_mm=1.0, modalities=("t1c", "flair"), jitter_voxels=2)
    crops, centres = lesion_crops(images, brain, (1.0, 1.0, 1.0), {"refined": lesion, "coarse": 0 * lesion}, settings)
    assert crops["refined"].shape == (2, 12, 12, 12) and crops["refined"].dtype == np.float32
    assert centres["refined"] == [19.5, 7.5, 15.5]
    np.testing.assert_allclose(centres["coarse"], ndimage.center_of_mass(brain), atol=1e-3)  # empty → brain
    t1c = images["t1c"]
    expected = (t1c[20, 8, 16] - t1c[brain].mean()) / t1c[brain].std()  # the crop's centre voxel, z-scored
    assert crops["refined"][0, 6, 6, 6] == pytest.approx(expected, rel=1e-5)
    outside = crops["refined"][1][:, :1]  # y index 1 of the scan, outside the brain: 0 after z-scoring
    assert np.all(outside == 0)
    with pytest.raises(InputError, match="flair"):
        lesion_crops({"t1c": images["t1c"]}, brain, (1, 1, 1), {"refined": lesion}, settings)
    with pytest.raises(InputError, match="shape"):
        lesion_crops({"t1c": images["t1c"][:-1], "flair": images["flair"]}, brain, (1, 1, 1), {"refined": lesion},
                     settings)


def test_the_window_is_central_by_default_and_shifts_within_the_jitter() -> None:
    crop = np.arange(2 * 10 * 10 * 10, dtype=np.float32).reshape(2, 10, 10, 10)
    assert np.array_equal(crop_window(crop, 2), crop[:, 2:8, 2:8, 2:8])
    assert np.array_equal(crop_window(crop, 2, (-2, 0, 2)), crop[:, 0:6, 2:8, 4:10])
    with pytest.raises(ConfigError, match="shift"):
        crop_window(crop, 2, (3, 0, 0))
    with pytest.raises(InputError, match="larger"):
        crop_window(crop, 5)


def test_crop_augmentation_follows_the_volume_and_draws_a_shift_within_the_jitter() -> None:
    rng = np.random.default_rng(3)
    crop = rng.normal(size=(2, 10, 10, 10)).astype(np.float32)
    spatial = DiagnosisAugmentSettings(rotate_prob=1.0, flip_prob=1.0, noise_prob=0.0, gamma_prob=0.0)
    volume = rng.normal(size=(12, 12, 12)).astype(np.float32)
    _, _, drawn = augment_pair(volume, None, spatial, np.random.default_rng(5), crop_jitter=2)
    assert drawn["flip"] and drawn["rotate_k"] in (1, 2, 3) and all(abs(s) <= 2 for s in drawn["crop_shift"])
    out = apply_crop_augmentation(crop, drawn, 2)
    window = crop_window(crop, 2, drawn["crop_shift"])
    for channel in range(2):  # the same rotation and flip as the volume, channel by channel
        np.testing.assert_array_equal(out[channel], apply_augmentation(window[channel], None, drawn)[0])
    noisy = DiagnosisAugmentSettings(rotate_prob=0.0, flip_prob=0.0, noise_prob=1.0, noise_std=0.5, gamma_prob=0.0)
    _, _, drawn = augment_pair(volume, None, noisy, np.random.default_rng(5), crop_jitter=0)
    out = apply_crop_augmentation(crop[:, 1:-1, 1:-1, 1:-1], drawn, 0)
    residual = out - crop[:, 1:-1, 1:-1, 1:-1]
    assert drawn["crop_shift"] == [0, 0, 0] and 0.4 < residual.std() < 0.6
    assert not np.allclose(residual[0], residual[1])  # each channel has its own noise field
    _, _, without = augment_pair(volume, None, noisy, np.random.default_rng(5))
    assert {k: v for k, v in without.items() if k != "crop_shift"} == {k: v for k, v in drawn.items()
                                                                       if k != "crop_shift"}


def _sample(crop_size: int = 10) -> DiagnosisSample:
    grid = np.zeros((8, 8, 8), np.float32)
    prior = grid.copy()
    prior[2:5, 2:5, 2:5] = 1.0
    crop = np.random.default_rng(0).normal(size=(2, crop_size, crop_size, crop_size)).astype(np.float32)
    return DiagnosisSample(grid, grid > 0, {"refined": prior}, {"subject_id": "s1"}, {"refined": crop})


def test_dataset_items_carry_the_central_window_or_an_augmented_one(tmp_path) -> None:
    sample = _sample()
    loaded = DiagnosisSample.load(sample.save(tmp_path / "s1.npz", "k"), "k")
    assert loaded is not None and np.array_equal(loaded.crop("refined"), sample.crop("refined"))
    plain = DiagnosisDataset([loaded], prior="refined", crop_jitter=2)[0]
    assert plain["crop"].shape == (2, 6, 6, 6)
    assert torch.equal(plain["crop"], torch.from_numpy(crop_window(sample.crop("refined"), 2)))
    augmented = DiagnosisDataset([loaded], prior="refined", crop_jitter=2,
                                 augment=DiagnosisAugmentSettings(rotate_prob=0.0, flip_prob=0.0, noise_prob=0.0,
                                                                  gamma_prob=0.0), seed=1)
    shifts = set()
    for epoch in range(6):
        augmented.set_epoch(epoch)
        item = augmented[0]
        shift = augmented.drawn[0]["crop_shift"]
        shifts.add(tuple(shift))
        assert torch.equal(item["crop"], torch.from_numpy(crop_window(sample.crop("refined"), 2, shift)))
    assert len(shifts) > 1
    assert "crop" not in DiagnosisDataset([loaded], prior="refined")[0]
    with pytest.raises(InputError, match="no lesion crop for the 'coarse'"):
        DiagnosisDataset([DiagnosisSample(sample.image, sample.brain, {"coarse": sample.priors["refined"]},
                                          sample.record)], prior="coarse", crop_jitter=2)
    with pytest.raises(ConfigError, match="prior"):
        DiagnosisDataset([sample], prior="none", crop_jitter=2)


def test_samples_get_crops_only_when_configured() -> None:
    brain = np.zeros(SCAN, bool)
    brain[4:26, 4:24, 3:21] = True
    lesion = np.zeros(SCAN, bool)
    lesion[18:22, 6:10, 14:18] = True
    result = LocalizationResult(coarse_prior=lesion.astype(np.float32), coarse_mask=lesion,
                                probability=lesion.astype(np.float32), refined_mask=lesion, brain_mask=brain,
                                proposals=Proposals.from_boxes(brain.shape, {}, "test"),
                                record={"proposer": "test", "fallback": None})
    image = Volume(_ramp(0), np.eye(4))
    settings = DiagnosisDataSettings(cohort="x", working_shape=(8, 8, 8),
                                     lesion_crop={"shape": [8, 8, 8], "spacing_mm": 1.0, "modalities": ["t1c"]})
    sample = sample_from_localization(image, result, settings, crop_from={"t1c": image.array})
    assert set(sample.crops) == {"coarse", "refined"} and sample.crops["refined"].shape == (1, 16, 16, 16)
    assert sample.record["crop_centres"]["refined"] == [19.5, 7.5, 15.5]
    with pytest.raises(ConfigError, match="crop images"):
        sample_from_localization(image, result, settings)
    plain = sample_from_localization(image, result, settings.model_copy(update={"lesion_crop": None}))
    assert plain.crops == {}


def test_config_rules_for_the_crop_branch() -> None:
    base = {"data": {"cohort": "x", "lesion_crop": {"shape": [16, 16, 16]}}, "augment": {"rotate_prob": 0.0}}
    config = load_diagnosis_config(None, {**base, "model": {"lesion_crop": True}})
    assert config.data.lesion_crop.modalities == ("t1c", "flair") and config.data.lesion_crop.jitter_voxels == 4
    with pytest.raises(ConfigError, match="model.lesion_crop needs data.lesion_crop"):
        load_diagnosis_config(None, {"data": {"cohort": "x"}, "model": {"lesion_crop": True}})
    with pytest.raises(ConfigError, match="lesion_crop=True / lesion_measurements=False need one"):
        load_diagnosis_config(None, {**base, "model": {"prior": "none", "mca": False, "lesion_crop": True}})
    with pytest.raises(ConfigError, match="8..256"):
        load_diagnosis_config(None, {"data": {"cohort": "x", "lesion_crop": {"shape": [4, 16, 16]}}})
    with pytest.raises(ConfigError, match="lesion_crop.shape"):
        load_diagnosis_config(None, {"data": {"cohort": "x", "working_shape": [16, 16, 16],
                                              "lesion_crop": {"shape": [16, 12, 16]}}})
    with pytest.raises(ConfigError, match="distinct"):
        load_diagnosis_config(None, {"data": {"cohort": "x", "lesion_crop": {"modalities": ["t1c", "t1c"]}}})
    # a prior used only by the crop branch is a used prior
    load_diagnosis_config(None, {**base, "model": {"mca": False, "lesion_crop": True}})
    with pytest.raises(ConfigError, match="whole_brain_dropout 0.5 needs model.lesion_crop"):
        load_diagnosis_config(None, {"data": {"cohort": "x"}, "model": {"whole_brain_dropout": 0.5}})
    assert load_diagnosis_config(None, {**base, "model": {"lesion_crop": True, "whole_brain_dropout": 0.5}}) \
        .model.whole_brain_dropout == 0.5


def test_config_rules_for_the_lesion_measurements() -> None:
    base = {"data": {"cohort": "x", "lesion_crop": {"shape": [16, 16, 16]}}, "augment": {"rotate_prob": 0.0}}
    assert load_diagnosis_config(None, {**base, "model": {"lesion_measurements": True}}).model.lesion_measurements
    with pytest.raises(ConfigError, match=r"missing: \['flair'\]"):
        load_diagnosis_config(None, {"data": {"cohort": "x", "lesion_crop": {"modalities": ["t1c", "t2"]}},
                                     "model": {"lesion_measurements": True}})
    with pytest.raises(ConfigError, match="model.lesion_measurements needs data.lesion_crop"):
        load_diagnosis_config(None, {"data": {"cohort": "x"}, "model": {"lesion_measurements": True}})
    with pytest.raises(ConfigError, match="lesion_measurements=True need one"):
        load_diagnosis_config(None, {**base, "model": {"prior": "none", "mca": False, "lesion_measurements": True}})
    # measurements alone use the prior (their crop is centred on it)
    load_diagnosis_config(None, {**base, "model": {"mca": False, "lesion_measurements": True}})
    tuned = load_diagnosis_config(None, {**base, "model": {"lesion_measurements": True,
                                                           "measurement_thresholds": {"flair_z": 0.8}}})
    assert (tuned.model.measurement_thresholds.enhancing_z, tuned.model.measurement_thresholds.flair_z) == (1.5, 0.8)
    with pytest.raises(ConfigError, match="flair_z"):
        load_diagnosis_config(None, {**base, "model": {"measurement_thresholds": {"flair_z": 0}}})


def test_dataset_appends_each_samples_measurements_to_its_clinical_values() -> None:
    crop = LesionCropSettings(shape=(8, 8, 8), spacing_mm=2.0, modalities=("t1c", "flair"), jitter_voxels=2)
    settings = LesionMeasurementSettings(crop=crop, thresholds=MeasurementThresholds())
    first = _sample(12)
    samples = [first, DiagnosisSample(first.image, first.brain, first.priors, first.record,
                                      {"refined": 2.0 * first.crop("refined")})]
    expected = np.stack([lesion_measurements(dict(zip(("t1c", "flair"), crop_window(s.crop("refined"), 2))), 2.0)
                         for s in samples])
    alone = DiagnosisDataset(samples, prior="refined", measurements=settings)
    assert alone.clinical.shape == (2, len(MEASUREMENTS))
    np.testing.assert_array_equal(alone.clinical, expected)
    assert not np.allclose(np.nan_to_num(expected[0]), np.nan_to_num(expected[1]))  # each sample its own
    clinical = np.array([[50.0], [60.0]], np.float32)
    both = DiagnosisDataset(samples, prior="refined", clinical=clinical, measurements=settings, crop_jitter=2)
    np.testing.assert_array_equal(both[1]["clinical"].numpy(), np.concatenate([[60.0], expected[1]]))
    assert samples[0].measurements("refined", settings) is samples[0].measurements("refined", settings)  # once
    lower = LesionMeasurementSettings(crop=crop, thresholds=MeasurementThresholds(enhancing_z=0.5, flair_z=0.5))
    np.testing.assert_array_equal(samples[0].measurements("refined", lower), lesion_measurements(
        dict(zip(("t1c", "flair"), crop_window(samples[0].crop("refined"), 2))), 2.0, enhancing_z=0.5, flair_z=0.5))
    assert not np.allclose(np.nan_to_num(samples[0].measurements("refined", lower)), np.nan_to_num(expected[0]))
    with pytest.raises(ConfigError, match="prior must not be 'none'"):
        DiagnosisDataset(samples, prior="none", measurements=settings)


def test_crop_dropout_needs_the_crop_branch() -> None:
    with pytest.raises(ConfigError, match="crop_dropout 0.5 needs model.lesion_crop"):
        load_diagnosis_config(None, {"data": {"cohort": "x"}, "model": {"crop_dropout": 0.5}})
    base = {"data": {"cohort": "x", "lesion_crop": {"shape": [16, 16, 16]}}, "augment": {"rotate_prob": 0.0}}
    assert load_diagnosis_config(None, {**base, "model": {"lesion_crop": True, "crop_dropout": 0.5}}) \
        .model.crop_dropout == 0.5
