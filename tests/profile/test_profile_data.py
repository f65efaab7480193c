"""MGMT-Net inputs: case loading, patches and augmentation, masked marker loss, post-processing, native grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from vbiopsy.data.labels import to_brats2024
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.nifti import load_volume, save_volume
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.losses import marker_pos_weight, masked_marker_loss
from vbiopsy.train.profile_config import ProfileAugment, ProfileInference
from vbiopsy.train.profile_data import (MARKERS, brain_box, case_key, load_cached_case, load_case, marker_values,
                                        save_case, zscore_in_brain)
from vbiopsy.train.profile_infer import CasePrediction, postprocess, to_native
from vbiopsy.train.profile_patches import PatchDataset, augment_patch, flip_all, patch_start

MODALITIES = ("t1", "t1c", "t2", "flair")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("profile") / "cohort"
    generate_cohort(PhantomConfig(n_patients=3, spacing_mm=4.0, diagnosis_mix={"glioma": 1.0}, seed=5), root)
    return read_cohort(root)


def test_case_is_cropped_resampled_and_zscored_in_brain(manifest) -> None:
    row = manifest.row(manifest.subjects[0])
    case = load_case(row, MODALITIES, 4.0)
    ref = load_volume(row["seg"], dtype=np.int16, allow_empty=True)
    ref_labels = to_brats2024(ref.array, row["seg_convention"])  # phantoms are written as UCSF-PDGM (1/2/4)
    assert case.image.shape[0] == 4 and case.present.all()
    assert case.seg is not None and case.seg.shape == case.image.shape[1:]
    # same spacing as the scan: the crop is exact, so the labels are the reference's labels in the box
    box = tuple(slice(a, b) for a, b in case.native.crop)
    assert np.array_equal(case.seg, ref_labels[box])
    brain = (case.image != 0).any(axis=0)
    for channel in case.image:
        assert abs(channel[brain].mean()) < 1e-4 and abs(channel[brain].std() - 1) < 1e-3
    assert case.markers.shape == (3,)


def test_absent_modality_is_zero_and_flagged(manifest) -> None:
    row = dict(manifest.row(manifest.subjects[0]), t2=None)
    case = load_case(row, MODALITIES, 4.0)
    assert case.present.tolist() == [True, True, False, True] and case.missing == [2]
    assert not case.image[2].any()
    with pytest.raises(InputError, match="none of the modalities"):
        load_case({**row, "t1": None, "t1c": None, "flair": None}, MODALITIES, 4.0)


def test_segmentation_conventions_are_converted_or_refused_clearly(manifest, tmp_path: Path) -> None:
    row = manifest.row(manifest.subjects[0])
    seg = load_volume(row["seg"], dtype=np.int16, allow_empty=True)
    assert row["seg_convention"] == "brats2021" and (seg.array == 4).any()  # ET written as 4
    converted = load_case(row, MODALITIES, 4.0)
    assert converted.seg is not None and (converted.seg == 3).sum() == (seg.array == 4).sum()  # 4 → ET (3)
    odd = np.where(seg.array == 2, 7, seg.array).astype(np.uint8)  # a value no BraTS convention defines
    path = save_volume(odd, seg.affine, tmp_path / "odd_seg.nii.gz")
    with pytest.raises(InputError, match=r"label values \[7\] are not defined in the brats2021"):
        load_case({**row, "seg": str(path)}, MODALITIES, 4.0)


def test_cache_round_trip_and_key_changes_with_settings(manifest, tmp_path: Path) -> None:
    row = manifest.row(manifest.subjects[1])
    case = load_case(row, MODALITIES, 4.0)
    key = case_key(row, MODALITIES, {"spacing_mm": 4.0})
    save_case(case, tmp_path / "c.npz", key)
    back = load_cached_case(tmp_path / "c.npz", key)
    assert back is not None and np.array_equal(back.image, case.image) and np.array_equal(back.seg, case.seg)
    assert back.native.crop == case.native.crop
    assert load_cached_case(tmp_path / "c.npz", case_key(row, MODALITIES, {"spacing_mm": 3.0})) is None


def test_marker_values_and_bad_marker() -> None:
    assert np.array_equal(marker_values({"idh": 1, "codel_1p19q": None, "tert": 0.0})[[0, 2]], [1, 0])
    assert np.isnan(marker_values({"idh": 1, "codel_1p19q": None, "tert": 0})[1])
    with pytest.raises(InputError, match="idh = 'yes'"):
        marker_values({"subject_id": "s1", "idh": "yes"})
    assert MARKERS == ("idh", "codel_1p19q", "tert")


def test_brain_box_and_zscore() -> None:
    a = np.zeros((10, 10, 10))
    a[3:5, 2:8, 6] = 1.0
    assert brain_box([a], margin=1) == ((2, 6), (1, 9), (5, 8))
    z = zscore_in_brain(np.arange(8.0).reshape(2, 2, 2), np.ones((2, 2, 2), bool))
    assert np.isclose(z.mean(), 0) and np.isclose(z.std(), 1)


def test_patch_sampling_and_augmentation_keep_image_and_labels_aligned(manifest) -> None:
    case = load_case(manifest.row(manifest.subjects[0]), MODALITIES, 4.0)
    settings = ProfileAugment(patch=(16, 16, 16), foreground_prob=1.0, flip_prob=1.0, intensity_prob=0.0,
                              modality_dropout=0.0)
    dataset = PatchDataset([case], settings.patch, settings, seed=1, augment=False)
    item = dataset[0]
    assert item["image"].shape == (4, 16, 16, 16) and item["seg"].shape == (16, 16, 16)
    assert (item["seg"] > 0).any()  # tumour-centred
    start = dataset.drawn[0]["start"]
    box = tuple(slice(s, s + 16) for s in start)
    assert np.array_equal(item["seg"].numpy(), case.seg[box])
    image, seg = flip_all(item["image"].numpy(), item["seg"].numpy(), (0, 2))
    assert np.array_equal(image[1], item["image"].numpy()[1][::-1, :, ::-1])
    assert np.array_equal(seg, item["seg"].numpy()[::-1, :, ::-1])
    assert patch_start((0, 50, 9), (16, 16, 16), (20, 60, 20)) == (0, 42, 1)


def test_modality_dropout_keeps_one_and_zeroes_the_hidden() -> None:
    settings = ProfileAugment(patch=(8, 8, 8), flip_prob=0, intensity_prob=0, modality_dropout=0.95)
    image = np.ones((4, 8, 8, 8), np.float32)
    for seed in range(20):
        out, _, present, drawn = augment_patch(image, np.zeros((8, 8, 8), np.uint8), np.ones(4, bool), spacing=2.0,
                                               settings=settings, rng=np.random.default_rng(seed))
        assert present.sum() >= 1
        assert all(not out[i].any() for i in drawn.get("hidden", []))
        assert all(out[i].all() for i in np.flatnonzero(present))


def test_patch_dataset_refuses_unlabelled_cases(manifest) -> None:
    case = load_case(manifest.row(manifest.subjects[0]), MODALITIES, 4.0, with_seg=False)
    with pytest.raises(ConfigError, match="has none"):
        PatchDataset([case], (8, 8, 8), ProfileAugment(patch=(8, 8, 8)))


def test_masked_marker_loss_equals_log_loss_over_known_labels() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0], [-0.5, 0.7, 0.1], [1.5, 0.2, -2.0]])
    target = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, float("nan")], [1.0, float("nan"), 1.0]])
    known = torch.isfinite(target)
    p = torch.sigmoid(logits)[known].numpy()
    y = target[known].numpy()
    expected = log_loss(y, p, labels=[0, 1])
    assert np.isclose(float(masked_marker_loss(logits, target)), expected, atol=1e-6)
    none_known = masked_marker_loss(logits, torch.full_like(target, float("nan")))
    assert float(none_known) == 0.0
    focal = masked_marker_loss(logits, target, focal_gamma=2.0)
    assert float(focal) < expected  # focal down-weights easy examples
    assert np.allclose(marker_pos_weight(np.array([[1, 0, np.nan], [0, 0, 1], [0, np.nan, 1]])), [2.0, 1.0, 1.0])


def test_postprocess_removes_small_components_and_relabels_tiny_et() -> None:
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 2
    labels[4, 4, 4] = 3
    labels[15, 15, 15] = 1  # one isolated voxel
    out = postprocess(labels, voxel_ml=0.001, settings=ProfileInference(min_component_ml=0.01, et_min_ml=0.005))
    assert out[15, 15, 15] == 0 and out[4, 4, 4] == 1 and (out[2:8, 2:8, 2:8] > 0).all()


def test_to_native_puts_labels_back_on_the_scan_grid(manifest) -> None:
    row = manifest.row(manifest.subjects[2])
    case = load_case(row, MODALITIES, 4.0)
    prob = np.stack([(case.seg == c).astype(np.float32) for c in range(5)])
    labels = to_native(CasePrediction(case.subject_id, prob, case.seg, np.zeros(3)), case, ProfileInference(min_component_ml=0))
    ref = load_volume(row["seg"], dtype=np.int16, allow_empty=True)
    assert labels.shape == ref.array.shape and np.array_equal(labels, to_brats2024(ref.array, "brats2021"))


def test_validation_score_combines_or_ignores_the_marker_aucs_as_configured() -> None:
    import pytest as _pytest

    from vbiopsy.errors import ConfigError
    from vbiopsy.tasks.profile import validation_score

    assert validation_score([0.6, 0.8], [0.9, None, 0.5]) == _pytest.approx(0.5 * (0.7 + 0.7))
    assert validation_score([0.6, 0.8], [0.9, None, 0.5], "wt_dice") == _pytest.approx(0.7)
    assert validation_score([0.6, 0.8], [None, None]) == _pytest.approx(0.7)  # no defined AUC: Dice alone
    with _pytest.raises(ConfigError, match="'auc'"):
        validation_score([0.5], [], "auc")
