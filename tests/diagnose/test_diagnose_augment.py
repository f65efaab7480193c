"""Diagnoser augmentation: the same spatial op on volume and prior, replayable draws, MONAI-equal gamma."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast, Flip, Rotate90

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.diagnosis_augment import (adjust_gamma, apply_augmentation, augment_pair, draw_augmentation,
                                             flip_left_right, rotate90)
from vbiopsy.train.diagnosis_config import DiagnosisAugmentSettings, DiagnosisConfig

SPATIAL_ONLY = DiagnosisAugmentSettings(rotate_prob=0.7, flip_prob=0.5, noise_prob=0.0, gamma_prob=0.0)


def _volume(shape: tuple[int, int, int] = (10, 10, 6), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_quarter_turn_moves_a_marked_voxel_as_derived_by_hand() -> None:
    # np.rot90(a, 1, axes=(0, 1)) sends a[i, j, k] to out[n - 1 - j, i, k] (n = size of axis 1)
    volume = np.zeros((5, 5, 3), dtype=np.float32)
    volume[1, 3, 2] = 1.0
    assert np.argwhere(rotate90(volume, 1)).tolist() == [[5 - 1 - 3, 1, 2]]
    assert np.argwhere(flip_left_right(volume)).tolist() == [[5 - 1 - 1, 3, 2]]
    # and both agree with MONAI's deterministic transforms on a channel-first copy
    for k in (1, 2, 3):
        expected = np.asarray(Rotate90(k=k, spatial_axes=(0, 1))(torch.from_numpy(volume)[None]))[0]
        np.testing.assert_array_equal(rotate90(volume, k), expected)
    np.testing.assert_array_equal(flip_left_right(volume), np.asarray(Flip(spatial_axis=0)(volume[None]))[0])


def test_volume_and_prior_get_the_same_spatial_op_for_every_draw() -> None:
    volume = _volume()
    prior = (volume > 0.8).astype(np.float32)
    seen = set()
    for seed in range(40):
        out, mask, drawn = augment_pair(volume, prior, SPATIAL_ONLY, np.random.default_rng(seed))
        seen.add((drawn["rotate_k"], drawn["flip"]))
        np.testing.assert_array_equal(mask, (out > 0.8).astype(np.float32))  # prior still marks the same voxels
    assert {k for k, _ in seen} == {0, 1, 2, 3} and {f for _, f in seen} == {False, True}


def test_a_recorded_draw_replays_exactly_and_intensity_ops_leave_the_prior_alone() -> None:
    settings = DiagnosisAugmentSettings(rotate_prob=0.5, flip_prob=0.5, noise_prob=1.0, gamma_prob=1.0)
    volume, prior = _volume(seed=3), np.random.default_rng(4).random((10, 10, 6)).astype(np.float32)
    out, mask, drawn = augment_pair(volume, prior, settings, np.random.default_rng(11))
    assert drawn["noise_seed"] is not None and 0.9 <= drawn["gamma"] <= 1.1
    again, again_mask = apply_augmentation(volume, prior, drawn)
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(mask, again_mask)
    spatial = {**drawn, "noise_seed": None, "gamma": None}
    moved, moved_mask = apply_augmentation(volume, prior, spatial)
    np.testing.assert_array_equal(moved_mask, mask)  # noise and gamma did not touch the prior
    assert not np.array_equal(moved, out)            # but they did change the volume
    assert np.std(out - adjust_gamma(moved + np.random.default_rng(drawn["noise_seed"]).normal(
        0, 0.01, moved.shape).astype(np.float32), drawn["gamma"])) < 1e-5


def test_gamma_is_monai_adjust_contrast_and_matches_the_formula() -> None:
    volume = _volume(seed=5)
    low, high = float(volume.min()), float(volume.max())
    expected = ((volume - low) / (high - low + 1e-7)) ** 1.07 * (high - low) + low
    np.testing.assert_allclose(adjust_gamma(volume, 1.07), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adjust_gamma(volume, 1.07), np.asarray(AdjustContrast(gamma=1.07)(volume)), atol=1e-6)
    with pytest.raises(ConfigError, match="gamma"):
        adjust_gamma(volume, -1.0)


def test_probabilities_zero_mean_no_op_and_bad_inputs_are_refused() -> None:
    off = DiagnosisAugmentSettings(rotate_prob=0, flip_prob=0, noise_prob=0, gamma_prob=0)
    volume = _volume()
    out, mask, drawn = augment_pair(volume, None, off, np.random.default_rng(0))
    np.testing.assert_array_equal(out, volume)
    assert mask is None and drawn["rotate_k"] == 0 and drawn["gamma"] is None
    with pytest.raises(InputError, match="square axial grid"):
        draw_augmentation(DiagnosisAugmentSettings(rotate_prob=1.0), np.random.default_rng(0), (10, 12, 6))
    with pytest.raises(InputError, match="prior"):
        apply_augmentation(volume, np.zeros((3, 3, 3), np.float32), drawn)
    with pytest.raises(ConfigError, match="DiagnosisAugmentSettings"):
        draw_augmentation({"rotate_prob": 0.5}, np.random.default_rng(0), (4, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="square axial grid"):
        from vbiopsy.config import build_config

        build_config(DiagnosisConfig, {"data": {"cohort": "x", "working_shape": [16, 20, 16]}})
