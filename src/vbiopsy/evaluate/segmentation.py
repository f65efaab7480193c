"""Segmentation metrics per BraTS region: Dice, HD95 (mm), sensitivity, specificity and volumes (ml).

Inputs are BraTS 2024 label maps (see :mod:`vbiopsy.data.labels`; convert older files with
``to_brats2024``) of one shape, with the voxel size in mm. Every region of :data:`REGIONS` (NETC,
SNFH, ET, RC and the composites TC = NETC+ET, WT = NETC+SNFH+ET) is scored as a binary mask.

**Dice** = 2|P∩R| / (|P|+|R|); **sensitivity** = TP/|R|; **specificity** = TN/(TN+FP), counted
over the whole volume (background included, as in BraTS). Equal to ``monai.metrics.compute_dice``.

**HD95** is MONAI's ``compute_hausdorff_distance(..., percentile=95, spacing=...)``, computed the
same way: the surface of a mask is its voxels that 6-connected binary erosion removes; for each
surface voxel of one mask its Euclidean distance in mm to the nearest surface voxel of the other
(``scipy.ndimage.distance_transform_edt(sampling=spacing)``) is taken; HD95 is the larger of the two
directed 95th percentiles (linear interpolation). Distance transforms run on the joint bounding box
of the two masks plus one voxel, so a 240×240×155 volume costs what its tumour costs. Other tools
differ slightly: medpy's ``hd95`` (nnU-Net) takes the 95th percentile of both directions pooled,
and the BraTS 2023/2024 package weights distances by surface-element area (DeepMind
``surface-distance``); the figures are close but not identical.

**Empty-mask policy** (:func:`empty_mask_policy`), the BraTS convention: the BraTS 2023/2024
metrics package (``rachitsaluja/BraTS-2023-Metrics``, ``brats_metrics.py``: "Legacy" full-image
Dice and HD95) sets Dice 1 and HD95 0 when prediction and reference are both empty, computes Dice
by its formula otherwise (0 when exactly one is empty) and replaces the infinite HD95 of a missed or
spurious region by a constant (inf → 374 there); nnU-Net's re-implementation of the BraTS
2017-2020 evaluation (``nnunet/dataset_conversion/Task082_BraTS_2020.py``, ``compute_BraTS_HD95``;
discussed in MIC-DKFZ/nnUNet issue #380) has the same rules with 373.12866 mm = √(240²+240²+155²),
the diagonal of the 240×240×155 1-mm BraTS box. vbiopsy uses 373.128664 mm (``worst_hd95="brats"``),
or the physical diagonal of the scored volume (``"volume_diagonal"``). Sensitivity with an empty
reference is 1 if the prediction is empty too and 0 otherwise (as BraTS); specificity when the
reference fills the whole volume follows the mirror rule. No metric is ever NaN or infinite.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from vbiopsy.data.labels import BRATS2024_LABELS, REGIONS, LabelConvention, unknown_values
from vbiopsy.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

BRATS_WORST_HD95_MM: Final[float] = 373.128664
"""HD95 (mm) given when exactly one of prediction and reference is empty: √(240²+240²+155²)."""

WorstHd95 = Literal["brats", "volume_diagonal"]
WORST_HD95_CHOICES: Final[tuple[str, ...]] = ("brats", "volume_diagonal")

METRICS: Final[tuple[str, ...]] = ("dice", "hd95_mm", "sensitivity", "specificity")
"""The per-region metrics, in report order (all unitless except ``hd95_mm``)."""

_POLICY_TEXT: Final[str] = (
    "BraTS empty-mask convention: prediction and reference both empty -> Dice 1, HD95 0 mm, sensitivity 1; "
    "exactly one empty -> Dice 0 and HD95 = worst case ({worst}); empty reference -> sensitivity 0 if the "
    "prediction is not empty; reference filling the volume -> specificity 1 if the prediction fills it too, "
    "else 0. A metric counts as valid where it is defined without this rule: Dice and sensitivity where the "
    "reference has the region, HD95 where both masks have it, specificity where the reference has background."
)

_WORST_TEXT: Final[dict[str, str]] = {
    "brats": "373.128664 mm, the diagonal of the 240x240x155 1-mm BraTS volume",
    "volume_diagonal": "the physical diagonal of each scored volume, |shape x spacing| mm",
}

_BRATS_LABELS: Final[frozenset[int]] = frozenset(v for v in BRATS2024_LABELS if v != 0)


@dataclass(frozen=True)
class RegionScore:
    """Metrics of one region of one case; counts are voxels, volumes ml, HD95 mm (policy applied, never NaN)."""

    dice: float
    hd95_mm: float
    sensitivity: float
    specificity: float
    pred_volume_ml: float
    ref_volume_ml: float
    ref_empty: bool
    pred_empty: bool
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def valid(self) -> dict[str, bool]:
        """Per metric: whether it is defined by its formula, i.e. the empty-mask policy was not needed."""
        return {"dice": not self.ref_empty, "hd95_mm": not (self.ref_empty or self.pred_empty),
                "sensitivity": not self.ref_empty, "specificity": self.tn + self.fp > 0}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON-ready)."""
        return asdict(self)


# ---------------------------------------------------------------- validation


def _label_volume(labels: ArrayLike, where: str) -> np.ndarray:
    """``labels`` as a 3-D integer array of BraTS 2024 values (integer-valued floats are accepted)."""
    array = np.asarray(labels)
    if array.ndim != 3 or array.size == 0:
        raise InputError(where, f"expected a non-empty 3-D label map, got shape {array.shape}")
    if array.dtype == np.bool_:
        raise InputError(where, "got a boolean mask; pass a BraTS 2024 label map (0 background, 1-4 regions)")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.rint(array)):
            raise InputError(where, "label map has non-integer or non-finite values")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(where, f"label map must be integer, got dtype {array.dtype}")
    if array.min() >= 0 and array.max() <= max(BRATS2024_LABELS):  # fast path; BraTS 2024 labels are 0..4
        return array
    bad = unknown_values(array, LabelConvention.BRATS2024)
    if bad:
        raise InputError(where, f"label values {bad} are not BraTS 2024 labels {sorted(BRATS2024_LABELS)}; "
                                f"convert older label maps with vbiopsy.data.labels.to_brats2024")
    return array


def _spacing(spacing_mm: Sequence[float], where: str = "spacing_mm") -> tuple[float, float, float]:
    """Three finite, positive voxel sizes in mm."""
    try:
        values = tuple(float(s) for s in spacing_mm)
    except (TypeError, ValueError):
        raise InputError(where, f"must be three voxel sizes in mm, got {spacing_mm!r}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(where, f"must be three finite voxel sizes > 0 mm, got {spacing_mm!r}")
    return values  # type: ignore[return-value]


def _regions(regions: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Region name → label values, each a non-empty set of BraTS 2024 foreground labels (1-4)."""
    if not isinstance(regions, Mapping) or not regions:
        raise ConfigError(f"regions must be a non-empty mapping name -> labels, got {regions!r}")
    out = {}
    for name, labels in regions.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"region names must be non-empty strings, got {name!r}")
        is_list = isinstance(labels, (Sequence, np.ndarray)) and not isinstance(labels, str)
        values = tuple(np.asarray(labels).ravel().tolist()) if is_list else ()
        if not values or not all(isinstance(v, int) and v in _BRATS_LABELS for v in values):
            raise ConfigError(f"region {name!r} must list BraTS 2024 labels from {sorted(_BRATS_LABELS)}, "
                              f"got {labels!r}")
        out[name] = tuple(int(v) for v in values)
    return out


def _check_worst(worst_hd95: str) -> None:
    if not isinstance(worst_hd95, str) or worst_hd95 not in WORST_HD95_CHOICES:
        raise ConfigError(f"worst_hd95 must be one of {list(WORST_HD95_CHOICES)}, got {worst_hd95!r}")


def _worst_hd95(worst_hd95: str, shape: tuple[int, ...], spacing: tuple[float, float, float]) -> float:
    """The HD95 (mm) given when exactly one mask is empty."""
    _check_worst(worst_hd95)
    if worst_hd95 == "brats":
        return BRATS_WORST_HD95_MM
    return float(np.linalg.norm(np.asarray(shape, dtype=np.float64) * np.asarray(spacing)))


def _percentile(percentile: float) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.floating)) \
            or not 0.0 < float(percentile) <= 100.0:
        raise ConfigError(f"percentile must be a number in (0, 100], got {percentile!r}")
    return float(percentile)


def _mask_pair(pred_mask: ArrayLike, ref_mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Two 3-D boolean masks of one shape."""
    masks = []
    for where, mask in (("pred_mask", pred_mask), ("ref_mask", ref_mask)):
        array = np.asarray(mask)
        if array.ndim != 3 or array.dtype != np.bool_:
            raise InputError(where, f"expected a 3-D boolean mask, got {array.dtype} of shape {array.shape}")
        masks.append(array)
    if masks[0].shape != masks[1].shape:
        raise InputError("ref_mask", f"shape {masks[1].shape} differs from pred_mask shape {masks[0].shape}")
    return masks[0], masks[1]


# ---------------------------------------------------------------- pure computations


def _joint_box(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``a | b`` grown by ``margin`` voxels (clipped), or None if both are empty."""
    union = a | b
    box = []
    for axis, size in enumerate(union.shape):
        others = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, size)))
    return tuple(box)


def _masks(labels: np.ndarray, regions: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Boolean mask per region by table look-up (labels already validated to 0-4)."""
    out = {}
    for name, values in regions.items():
        table = np.zeros(max(BRATS2024_LABELS) + 1, dtype=bool)
        table[list(values)] = True
        out[name] = table[labels]
    return out


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: those removed by 6-connected erosion (outside the array counts as background)."""
    return mask & ~ndimage.binary_erosion(mask)


def _hausdorff(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float], percentile: float) -> float:
    """Symmetric percentile Hausdorff distance (mm) of two non-empty masks, on their joint box."""
    box = _joint_box(pred, ref)
    assert box is not None  # both masks are non-empty here
    pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    return float(max(np.percentile(to_ref, percentile), np.percentile(to_pred, percentile)))


def _rate(hits: int, total: int, other_total: int) -> float:
    """hits/total; with total 0 (the class is absent in the reference): 1 if absent in the prediction too, else 0."""
    if total:
        return hits / total
    return 1.0 if other_total == 0 else 0.0


def _score(pred: np.ndarray, ref: np.ndarray, n_voxels: int, spacing: tuple[float, float, float],
           worst: float) -> RegionScore:
    """All metrics of one region; ``pred``/``ref`` may be a crop holding every foreground voxel of the volume."""
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref))
    fp, fn = n_pred - tp, n_ref - tp
    tn = n_voxels - n_pred - n_ref + tp
    if n_pred and n_ref:
        hd95 = _hausdorff(pred, ref, spacing, 95.0)
    else:
        hd95 = 0.0 if n_pred == n_ref else worst
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    return RegionScore(
        dice=2.0 * tp / (n_pred + n_ref) if n_pred + n_ref else 1.0, hd95_mm=hd95,
        sensitivity=_rate(tp, n_ref, n_pred), specificity=_rate(tn, n_voxels - n_ref, n_voxels - n_pred),
        pred_volume_ml=n_pred * voxel_ml, ref_volume_ml=n_ref * voxel_ml, ref_empty=n_ref == 0,
        pred_empty=n_pred == 0, tp=tp, fp=fp, fn=fn, tn=tn)


# ---------------------------------------------------------------- public API


def empty_mask_policy(worst_hd95: WorstHd95 = "brats") -> str:
    """The empty-mask rule in words, with the worst-case HD95 chosen, for reports and summaries."""
    _check_worst(worst_hd95)
    return _POLICY_TEXT.format(worst=_WORST_TEXT[worst_hd95])


def region_masks(labels: ArrayLike, regions: Mapping[str, Sequence[int]] = REGIONS) -> dict[str, np.ndarray]:
    """Boolean mask (same shape as ``labels``) per region of a BraTS 2024 label map (X, Y, Z)."""
    return _masks(_label_volume(labels, "labels"), _regions(regions))


def hausdorff_distance(pred_mask: ArrayLike, ref_mask: ArrayLike, spacing_mm: Sequence[float], *,
                       percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm between two non-empty 3-D boolean masks.

    The larger of the two directed ``percentile``-th surface distances, as MONAI's
    ``compute_hausdorff_distance(..., percentile=, spacing=)`` (100 gives the plain Hausdorff
    distance). Both masks must be non-empty: the distance is undefined otherwise, and
    :func:`region_metrics` applies the empty-mask policy instead.
    """
    pred, ref = _mask_pair(pred_mask, ref_mask)
    spacing = _spacing(spacing_mm)
    q = _percentile(percentile)
    for where, mask in (("pred_mask", pred), ("ref_mask", ref)):
        if not mask.any():
            raise InputError(where, "is empty; a Hausdorff distance needs both masks non-empty")
    return _hausdorff(pred, ref, spacing, q)


def region_metrics(pred: ArrayLike, ref: ArrayLike, spacing_mm: Sequence[float], *,
                   regions: Mapping[str, Sequence[int]] = REGIONS,
                   worst_hd95: WorstHd95 = "brats") -> dict[str, RegionScore]:
    """Dice, HD95 (mm), sensitivity, specificity and volumes (ml) per region of a predicted vs a reference map.

    ``pred`` and ``ref`` are BraTS 2024 label maps (X, Y, Z) on one grid of voxel size ``spacing_mm``
    (mm per axis). Empty regions follow :func:`empty_mask_policy`; ``worst_hd95`` picks the
    constant (``"brats"``: 373.128664 mm, ``"volume_diagonal"``: ‖shape × spacing‖ mm).
    """
    predicted, reference = _label_volume(pred, "pred"), _label_volume(ref, "ref")
    if predicted.shape != reference.shape:
        raise InputError("ref", f"shape {reference.shape} differs from pred shape {predicted.shape}")
    spacing = _spacing(spacing_mm)
    chosen = _regions(regions)
    worst = _worst_hd95(worst_hd95, predicted.shape, spacing)
    box = _joint_box(predicted != 0, reference != 0)
    if box is None:  # no foreground anywhere: score 1-voxel crops, which the counts make exact
        box = (slice(0, 1),) * 3
    pred_masks, ref_masks = _masks(predicted[box], chosen), _masks(reference[box], chosen)
    return {name: _score(pred_masks[name], ref_masks[name], predicted.size, spacing, worst) for name in chosen}


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, median and sample sd (ddof 1) of ``values``; None where undefined (no value, or sd of one)."""
    if not values:
        return {"mean": None, "median": None, "sd": None}
    return {"mean": float(statistics.fmean(values)), "median": float(statistics.median(values)),
            "sd": float(statistics.stdev(values)) if len(values) > 1 else None}


def _case_input(case: str, value: object) -> tuple[ArrayLike, ArrayLike, Sequence[float]]:
    if not isinstance(case, str) or not case:
        raise InputError("cases", f"case ids must be non-empty strings, got {case!r}")
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise InputError(f"case {case!r}", "expected a (pred, ref, spacing_mm) tuple")
    return value[0], value[1], value[2]


def cohort_segmentation_metrics(cases: Mapping[str, tuple[ArrayLike, ArrayLike, Sequence[float]]], *,
                                regions: Mapping[str, Sequence[int]] = REGIONS,
                                worst_hd95: WorstHd95 = "brats") -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`region_metrics` for every case, one row per (case, region), and a per-region summary.

    ``cases`` maps case id → (pred, ref, spacing_mm). The summary is JSON-ready::

        {"policy": str, "worst_hd95": str, "n_cases": int,
         "regions": {region: {"n_ref_present": int,
                              metric: {"n", "n_valid", "n_policy", "mean", "median", "sd",
                                       "mean_valid", "median_valid", "sd_valid"}}}}

    ``mean/median/sd`` run over all cases with the policy values included (the BraTS ranking
    convention); ``*_valid`` over the ``n_valid`` cases where the metric needed no policy (None if
    there are none; sd needs two). ``n_policy = n - n_valid``.
    """
    import pandas as pd  # imported here: pandas costs ~0.3 s and only this function needs it

    if not isinstance(cases, Mapping) or not cases:
        raise InputError("cases", "expected a non-empty mapping case id -> (pred, ref, spacing_mm)")
    chosen = _regions(regions)
    policy = empty_mask_policy(worst_hd95)  # validates the option before any work
    rows: list[dict[str, Any]] = []
    scores: dict[str, list[RegionScore]] = {name: [] for name in chosen}
    for case, value in cases.items():
        pred, ref, spacing = _case_input(case, value)
        try:
            per_region = region_metrics(pred, ref, spacing, regions=chosen, worst_hd95=worst_hd95)
        except InputError as err:
            raise InputError(f"case {case!r} {err.where}", err.problem) from None
        for name, score in per_region.items():
            scores[name].append(score)
            rows.append({"case": case, "region": name, **score.to_dict()})
    summary: dict[str, Any] = {"policy": policy, "worst_hd95": worst_hd95,
                               "n_cases": len(cases), "regions": {}}
    for name, region_scores in scores.items():
        entry: dict[str, Any] = {"n_ref_present": sum(not s.ref_empty for s in region_scores)}
        for metric in METRICS:
            values = [float(getattr(s, metric)) for s in region_scores]
            valid = [v for v, s in zip(values, region_scores) if s.valid[metric]]
            entry[metric] = {"n": len(values), "n_valid": len(valid), "n_policy": len(values) - len(valid),
                             **_stats(values), **{f"{k}_valid": v for k, v in _stats(valid).items()}}
        summary["regions"][name] = entry
    return pd.DataFrame(rows), summary
