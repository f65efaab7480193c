"""Segmentation metrics per BraTS region against hand counts, hand-derived distances and MONAI."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.metrics.utils import get_edge_surface_distance
from scipy import ndimage

from vbiopsy.data.labels import REGIONS, to_brats2024
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.evaluate.segmentation import (
    BRATS_WORST_HD95_MM, METRICS, cohort_segmentation_metrics, empty_mask_policy, hausdorff_distance, region_masks,
    region_metrics,
)

SEG_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "tcga-fg-6692" / "seg"
ALGORITHMS = ("hnfnetv1-20", "isen-20", "sanet0-20", "scan-20", "yixinmpl-20")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """MONAI's many small tensor ops are slower with threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tensor(mask: np.ndarray) -> torch.Tensor:
    """A (1, 1, X, Y, Z) float tensor, MONAI's batch-first one-channel layout."""
    return torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()


def monai_dice_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """MONAI's Dice (empty reference -> NaN) and HD95 (NaN/inf where a mask is empty) of two boolean masks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks; those cases are asserted explicitly
        dice = compute_dice(_tensor(pred), _tensor(ref), include_background=True).item()
        hd95 = compute_hausdorff_distance(_tensor(pred), _tensor(ref), include_background=True, percentile=95,
                                          spacing=spacing).item()
    return dice, hd95


def monai_distances_hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """HD95 from MONAI's own surface voxels and surface distances, reduced in float64.

    MONAI rounds distances to float32 and takes the quantile in float32, whose interpolation
    position (0.95·(n-1)) loses ~1e-5 mm for surfaces of thousands of voxels; reducing MONAI's
    distances in float64 isolates its definition from that rounding.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a deprecation inside MONAI's own call chain
        _, distances, _ = get_edge_surface_distance(torch.from_numpy(pred), torch.from_numpy(ref), spacing=spacing,
                                                    symmetric=True)
    return max(float(np.percentile(d.numpy().astype(np.float64), 95)) for d in distances)


def random_labels(shape: tuple[int, int, int], seed: int, shift: int = 0) -> np.ndarray:
    """A BraTS 2024 map of nested smooth blobs (SNFH around TC, ET rim, NETC core, some RC), optionally shifted."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    labels = np.zeros(shape, dtype=np.uint8)
    labels[field > 0.55] = 2
    labels[field > 0.65] = 3
    labels[field > 0.75] = 1
    labels[(field < 0.15)] = 4
    return np.roll(labels, shift, axis=0)


# ---------------------------------------------------------------- hand-derived answers


def test_two_cubes_dice_sensitivity_specificity_volumes_by_counting() -> None:
    pred = np.zeros((10, 10, 10), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[2:6, 2:6, 2:6] = 3  # 64 voxels
    ref[3:7, 3:7, 3:7] = 3  # 64 voxels, overlap [3:6]^3 = 27
    score = region_metrics(pred, ref, (2.0, 2.0, 2.0))["ET"]
    assert (score.tp, score.fp, score.fn, score.tn) == (27, 37, 37, 1000 - 101)
    assert score.dice == 2 * 27 / 128
    assert score.sensitivity == 27 / 64
    assert score.specificity == 899 / 936
    assert score.pred_volume_ml == pytest.approx(64 * 8 / 1000) and score.ref_volume_ml == pytest.approx(0.512)
    assert not score.ref_empty and not score.pred_empty
    dice, _ = monai_dice_hd95(pred == 3, ref == 3, (2.0, 2.0, 2.0))
    assert score.dice == pytest.approx(dice, abs=1e-6)


@pytest.mark.parametrize(("axis", "spacing", "expected_mm"), [
    (0, (2.5, 1.0, 0.5), 3 * 2.5),
    (2, (2.5, 1.0, 0.5), 3 * 0.5),
    (1, (1.0, 1.2, 1.0), 3 * 1.2),
])
def test_hd95_of_shifted_plates_in_mm(axis: int, spacing: tuple[float, float, float], expected_mm: float) -> None:
    # Two plates 2 voxels thick spanning the whole volume across `axis`, 3 voxels apart along it:
    # every voxel is a surface voxel; half the directed distances are 3 steps, half 2, so the
    # 95th percentile in both directions is 3 steps = 3 * spacing[axis] mm.
    shape = (12, 12, 12)
    index = [slice(None)] * 3
    pred = np.zeros(shape, dtype=np.uint8)
    ref = np.zeros(shape, dtype=np.uint8)
    index[axis] = slice(2, 4)
    pred[tuple(index)] = 2
    index[axis] = slice(5, 7)
    ref[tuple(index)] = 2
    score = region_metrics(pred, ref, spacing)["SNFH"]
    assert score.hd95_mm == pytest.approx(expected_mm, abs=1e-12)
    assert score.dice == 0.0 and not score.ref_empty and not score.pred_empty
    _, hd95 = monai_dice_hd95(pred == 2, ref == 2, spacing)
    assert score.hd95_mm == pytest.approx(hd95, abs=1e-6)


def test_single_voxels_hausdorff_is_their_distance_in_mm() -> None:
    pred = np.zeros((8, 8, 8), dtype=bool)
    ref = np.zeros_like(pred)
    pred[1, 2, 3] = True
    ref[4, 6, 3] = True
    spacing = (0.5, 2.0, 3.0)
    expected = math.hypot(3 * 0.5, 4 * 2.0)
    assert hausdorff_distance(pred, ref, spacing) == pytest.approx(expected, abs=1e-12)
    assert hausdorff_distance(pred, ref, spacing, percentile=100) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_shifted_ball_bounded_by_shift_and_equal_to_monai(shift: int) -> None:
    # Every surface voxel of the shifted ball is a surface voxel of the ball moved by `shift` voxels,
    # so no directed distance exceeds shift * spacing along that axis; identical balls give 0.
    grid = np.indices((24, 24, 24)).astype(float)
    spacing = (1.5, 1.0, 0.7)
    ball = ((grid - 11.5) ** 2 * np.array(spacing)[:, None, None, None] ** 2).sum(axis=0) <= 6.0 ** 2
    moved = np.roll(ball, shift, axis=0)
    assert hausdorff_distance(ball, ball, spacing) == 0.0
    full = hausdorff_distance(ball, moved, spacing, percentile=100)
    hd95 = hausdorff_distance(ball, moved, spacing)
    assert 0.0 < hd95 <= full <= shift * spacing[0] + 1e-12
    _, monai_hd95 = monai_dice_hd95(ball, moved, spacing)
    assert hd95 == pytest.approx(monai_hd95, abs=1e-6)
    assert hd95 == pytest.approx(monai_distances_hd95(ball, moved, spacing), abs=1e-9)


# ---------------------------------------------------------------- empty-mask policy


def test_empty_mask_policy() -> None:
    ref = np.zeros((10, 12, 8), dtype=np.uint8)
    ref[2:5, 2:5, 2:5] = 1  # NETC only: TC and WT present, SNFH/ET/RC absent
    pred = np.zeros_like(ref)
    pred[6:8, 6:8, 4:6] = 4  # RC only
    scores = region_metrics(pred, ref, (1.0, 2.0, 3.0))
    both = scores["ET"]
    assert (both.dice, both.hd95_mm, both.sensitivity, both.specificity) == (1.0, 0.0, 1.0, 1.0)
    assert both.ref_empty and both.pred_empty
    assert both.valid == {"dice": False, "hd95_mm": False, "sensitivity": False, "specificity": True}
    missed = scores["NETC"]  # prediction empty, reference not
    assert (missed.dice, missed.hd95_mm, missed.sensitivity, missed.specificity) == (0.0, BRATS_WORST_HD95_MM, 0.0, 1.0)
    assert missed.pred_empty and not missed.ref_empty
    assert missed.valid == {"dice": True, "hd95_mm": False, "sensitivity": True, "specificity": True}
    spurious = scores["RC"]  # reference empty, prediction not: 8 false positives in 960 voxels
    assert (spurious.dice, spurious.hd95_mm, spurious.sensitivity) == (0.0, BRATS_WORST_HD95_MM, 0.0)
    assert spurious.specificity == (960 - 8) / 960
    assert spurious.ref_empty and not spurious.pred_empty
    assert spurious.valid == {"dice": False, "hd95_mm": False, "sensitivity": False, "specificity": True}
    diagonal = region_metrics(pred, ref, (1.0, 2.0, 3.0), worst_hd95="volume_diagonal")["RC"].hd95_mm
    assert diagonal == pytest.approx(math.sqrt(10**2 + 24**2 + 24**2))
    assert BRATS_WORST_HD95_MM == pytest.approx(math.sqrt(240**2 + 240**2 + 155**2), abs=1e-6)
    assert "373.128664" in empty_mask_policy() and "|shape x spacing|" in empty_mask_policy("volume_diagonal")


def test_policy_cases_are_where_monai_is_nan_or_infinite() -> None:
    ref = np.zeros((10, 10, 10), dtype=np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    pred[6:8, 6:8, 6:8] = 4
    scores = region_metrics(pred, ref, (1.0, 1.0, 1.0))
    for name, score in scores.items():
        dice, hd95 = monai_dice_hd95(region_masks(pred)[name], region_masks(ref)[name], (1.0, 1.0, 1.0))
        assert math.isnan(dice) == (not score.valid["dice"]), name
        assert (not math.isfinite(hd95)) == (not score.valid["hd95_mm"]), name
        assert all(math.isfinite(getattr(score, m)) for m in METRICS)


def test_all_background_volumes() -> None:
    empty = np.zeros((6, 6, 6), dtype=np.int16)
    for score in region_metrics(empty, empty, (1.0, 1.0, 1.0)).values():
        assert (score.dice, score.hd95_mm, score.sensitivity, score.specificity) == (1.0, 0.0, 1.0, 1.0)
        assert score.tn == 216 and score.pred_volume_ml == 0.0


def test_region_filling_the_volume_mirror_rule_for_specificity() -> None:
    full = np.full((6, 6, 6), 2, dtype=np.uint8)
    partial = full.copy()
    partial[0] = 0
    assert region_metrics(full, full, (1.0, 1.0, 1.0))["WT"].specificity == 1.0
    assert region_metrics(partial, full, (1.0, 1.0, 1.0))["WT"].specificity == 0.0
    assert not region_metrics(partial, full, (1.0, 1.0, 1.0))["WT"].valid["specificity"]


# ---------------------------------------------------------------- regions


def test_composite_regions_from_their_labels() -> None:
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[0, 0, :4] = [1, 2, 3, 4]
    masks = region_masks(labels)
    assert set(masks) == set(REGIONS)
    expected = {"NETC": [0], "SNFH": [1], "ET": [2], "RC": [3], "TC": [0, 2], "WT": [0, 1, 2]}
    for name, positions in expected.items():
        assert masks[name].dtype == bool and masks[name].shape == labels.shape
        assert np.flatnonzero(masks[name][0, 0]).tolist() == positions, name
        assert masks[name].sum() == len(positions)


def test_composite_dice_by_counting() -> None:
    # ref: 4 NETC, 4 ET, 8 SNFH voxels; pred swaps NETC and ET and calls 4 SNFH voxels RC
    ref = np.zeros((8, 8, 8), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 0, :4], ref[0, 1, :4], ref[0, 2, :8] = 1, 3, 2
    pred[0, 0, :4], pred[0, 1, :4], pred[0, 2, :4], pred[0, 2, 4:8] = 3, 1, 2, 4
    scores = region_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert scores["NETC"].dice == 0.0 and scores["ET"].dice == 0.0
    assert scores["TC"].dice == 1.0  # TC = NETC + ET is unchanged by the swap
    assert scores["SNFH"].dice == 2 * 4 / (4 + 8)
    assert scores["WT"].dice == 2 * 12 / (12 + 16)
    assert scores["RC"].ref_empty and scores["RC"].dice == 0.0 and scores["RC"].fp == 4
    custom = region_metrics(pred, ref, (1.0, 1.0, 1.0), regions={"RC": (4,), "core": np.array([1, 3])})
    assert list(custom) == ["RC", "core"] and custom["RC"] == scores["RC"] and custom["core"] == scores["TC"]


@pytest.mark.parametrize("seed", range(3))
def test_every_region_matches_monai_with_anisotropic_spacing(seed: int) -> None:
    ref = random_labels((20, 24, 16), seed)
    pred = random_labels((20, 24, 16), seed + 10) if seed == 2 else random_labels((20, 24, 16), seed, 2)
    spacing = (1.2, 0.8, 2.5)
    scores = region_metrics(pred, ref, spacing)
    pred_masks, ref_masks = region_masks(pred), region_masks(ref)
    compared = 0
    for name, score in scores.items():
        dice, hd95 = monai_dice_hd95(pred_masks[name], ref_masks[name], spacing)
        if score.valid["dice"]:
            assert score.dice == pytest.approx(dice, abs=1e-6), name
        if score.valid["hd95_mm"]:
            compared += 1
            assert score.hd95_mm == pytest.approx(hd95, abs=5e-5), name  # MONAI's float32 quantile
            assert score.hd95_mm == pytest.approx(
                monai_distances_hd95(pred_masks[name], ref_masks[name], spacing), abs=1e-6), name
    assert compared >= 4


def test_cropping_does_not_change_results() -> None:
    small = random_labels((16, 16, 16), 4)
    other = random_labels((16, 16, 16), 4, 1)
    big_pred = np.zeros((40, 36, 30), dtype=np.uint8)
    big_ref = np.zeros_like(big_pred)
    big_pred[10:26, 12:28, 7:23], big_ref[10:26, 12:28, 7:23] = small, other
    for name, score in region_metrics(small, other, (1.0, 1.0, 1.0)).items():
        big = region_metrics(big_pred, big_ref, (1.0, 1.0, 1.0))[name]
        assert (big.dice, big.hd95_mm, big.sensitivity, big.tp, big.fp, big.fn) == (
            score.dice, score.hd95_mm, score.sensitivity, score.tp, score.fp, score.fn)
        assert big.tn == score.tn + big_pred.size - small.size


# ---------------------------------------------------------------- cohort summary


def test_cohort_summary_counts_and_statistics() -> None:
    base = random_labels((16, 16, 16), 5)
    no_et = base.copy()
    no_et[no_et == 3] = 2
    cases = {"a": (random_labels((16, 16, 16), 5, 1), base, (1.0, 1.0, 1.0)),
             "b": (random_labels((16, 16, 16), 5, 2), base, (1.0, 1.0, 2.0)),
             "c": (base, no_et, (1.0, 1.0, 1.0))}  # reference without ET, prediction with it
    per_case, summary = cohort_segmentation_metrics(cases)
    assert len(per_case) == 3 * len(REGIONS) and set(per_case["case"]) == set(cases)
    assert summary["n_cases"] == 3 and "373.128664" in summary["policy"]
    et = summary["regions"]["ET"]
    assert et["n_ref_present"] == 2
    assert (et["dice"]["n"], et["dice"]["n_valid"], et["dice"]["n_policy"]) == (3, 2, 1)
    assert (et["hd95_mm"]["n_valid"], et["hd95_mm"]["n_policy"]) == (2, 1)
    direct = [region_metrics(*cases[c])["ET"] for c in "abc"]
    hd = [s.hd95_mm for s in direct]
    assert hd[2] == BRATS_WORST_HD95_MM
    assert et["hd95_mm"]["mean"] == pytest.approx(sum(hd) / 3)
    assert et["hd95_mm"]["median"] == sorted(hd)[1]
    assert et["hd95_mm"]["sd"] == pytest.approx(statistics.stdev(hd))
    assert et["hd95_mm"]["mean_valid"] == pytest.approx((hd[0] + hd[1]) / 2)
    assert et["dice"]["sd_valid"] == pytest.approx(float(np.std([direct[0].dice, direct[1].dice], ddof=1)))
    rc = summary["regions"]["RC"]
    assert rc["sensitivity"]["n_valid"] == sum(not s.ref_empty for s in (region_metrics(*cases[c])["RC"]
                                                                         for c in "abc"))
    assert not per_case[list(METRICS)].isna().any().any()
    one = cohort_segmentation_metrics({"a": cases["a"]})[1]
    assert one["regions"]["WT"]["dice"]["sd"] is None and one["regions"]["WT"]["dice"]["mean"] is not None


# ---------------------------------------------------------------- validation


def test_bad_inputs_name_the_problem() -> None:
    good = np.zeros((6, 6, 6), dtype=np.uint8)
    with pytest.raises(InputError, match="differs from pred shape"):
        region_metrics(good, np.zeros((6, 6, 7), dtype=np.uint8), (1, 1, 1))
    with pytest.raises(InputError, match=r"label values \[5\]"):
        region_metrics(np.full((6, 6, 6), 5, dtype=np.uint8), good, (1, 1, 1))
    with pytest.raises(InputError, match="boolean mask"):
        region_masks(good.astype(bool))
    with pytest.raises(InputError, match="3-D"):
        region_masks(np.zeros((6, 6), dtype=np.uint8))
    with pytest.raises(InputError, match="non-integer"):
        region_masks(np.full((6, 6, 6), 0.5))
    with pytest.raises(InputError, match="spacing_mm"):
        region_metrics(good, good, (1.0, -1.0, 1.0))
    with pytest.raises(InputError, match="spacing_mm"):
        region_metrics(good, good, (1.0, 1.0))
    with pytest.raises(ConfigError, match="worst_hd95"):
        region_metrics(good, good, (1, 1, 1), worst_hd95="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'XX'"):
        region_masks(good, {"XX": (7,)})
    with pytest.raises(ConfigError, match="'bg'"):
        region_masks(good, {"bg": (0, 1)})
    with pytest.raises(ConfigError, match="worst_hd95"):
        cohort_segmentation_metrics({"a": (good, good, (1, 1, 1))}, worst_hd95="374")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="percentile"):
        hausdorff_distance(good == 0, good == 0, (1, 1, 1), percentile=0)
    with pytest.raises(InputError, match="pred_mask: is empty"):
        hausdorff_distance(good == 1, good == 0, (1, 1, 1))
    with pytest.raises(InputError, match="cases"):
        cohort_segmentation_metrics({})
    with pytest.raises(InputError, match="case 'p7' ref"):
        cohort_segmentation_metrics({"p7": (good, np.full((6, 6, 6), 9), (1, 1, 1))})


def test_float_label_maps_are_accepted_when_integer_valued() -> None:
    labels = random_labels((12, 12, 12), 6)
    assert all(np.array_equal(a, b) for a, b in zip(region_masks(labels.astype(np.float64)).values(),
                                                      region_masks(labels).values()))


# ---------------------------------------------------------------- real data


def _foreground_crop(*label_maps: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of the foreground of all maps plus ``margin`` voxels: what MONAI crops to itself."""
    union = np.any([m != 0 for m in label_maps], axis=0)
    hits = np.nonzero(union)
    return tuple(slice(max(int(h.min()) - margin, 0), int(h.max()) + 1 + margin) for h in hits)


@pytest.mark.skipif(not SEG_DIR.is_dir(), reason=f"real segmentations not found at {SEG_DIR}")
def test_real_segmentations_vs_fusion_match_monai() -> None:
    from vbiopsy.data.nifti import load_volume

    fusion = load_volume(SEG_DIR / "fusion_mav.nii.gz", dtype=np.int16, allow_empty=True)
    ref = to_brats2024(fusion.array, "brats2021")
    spacing = fusion.grid.spacing
    preds = {name: to_brats2024(load_volume(SEG_DIR / f"{name}.nii.gz", dtype=np.int16, allow_empty=True).array,
                                "brats2021") for name in ALGORITHMS}
    # vbiopsy scores the full 240x240x155 volumes; MONAI gets them cropped to the joint foreground
    # (+2 voxels), which it would crop to anyway for HD95 and which leaves Dice's counts unchanged.
    box = _foreground_crop(ref, *preds.values())
    ref_masks = region_masks(ref[box])
    checked = policy = 0
    for name, pred in preds.items():
        pred_masks = region_masks(pred[box])
        for region, score in region_metrics(pred, ref, spacing).items():
            dice, hd95 = monai_dice_hd95(pred_masks[region], ref_masks[region], spacing)
            assert all(math.isfinite(getattr(score, m)) for m in METRICS)
            if score.valid["hd95_mm"]:
                checked += 1
                assert score.dice == pytest.approx(dice, abs=1e-6), (name, region)
                assert score.hd95_mm == pytest.approx(hd95, abs=5e-5), (name, region)  # MONAI's float32 quantile
                assert score.hd95_mm == pytest.approx(
                    monai_distances_hd95(pred_masks[region], ref_masks[region], spacing), abs=1e-6), (name, region)
            else:  # MONAI is NaN (empty reference) or inf (one empty): the policy applies
                policy += 1
                assert math.isnan(hd95) or math.isinf(hd95), (name, region)
                assert math.isnan(dice) == score.ref_empty, (name, region)
                assert score.hd95_mm in (0.0, BRATS_WORST_HD95_MM)
                assert score.dice == (1.0 if score.ref_empty and score.pred_empty else 0.0)
    assert checked == 25 and policy == 5  # RC is absent from BraTS 2021 labels: both empty in every case
