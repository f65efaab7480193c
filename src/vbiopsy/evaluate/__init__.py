"""Evaluation core shared by every pipeline: discrimination, threshold metrics, calibration, decision
curves, segmentation overlap/distance per BraTS region and survival statistics, each matching its reference library (scikit-learn, scipy,
statsmodels, dcurves, lifelines; see the tests).

Conventions: labels are class indices ``0..K-1``; probabilities are (n,) = P(class 1) for binary
problems or (n, K) with rows summing to 1; survival ``risk`` is higher for shorter survival.
Bootstrapped figures are stratified percentile bootstraps seeded with ``np.random.default_rng``.
"""

from __future__ import annotations

from vbiopsy.evaluate.auc import (
    AucEstimate, RocBand, bootstrap_auc, bootstrap_auc_samples, paired_bootstrap_difference, present_class_scores,
    roc_auc, roc_curve_band,
)
from vbiopsy.evaluate.bootstrap import Difference, stratified_bootstrap_indices
from vbiopsy.evaluate.calibration import CalibrationCurve, brier_score, calibration_curve
from vbiopsy.evaluate.classification import (
    classification_metrics, confusion_matrix, mcnemar_test, metrics_from_confusion, predict_labels, youden_threshold,
)
from vbiopsy.evaluate.decision import DecisionCurve, net_benefit
from vbiopsy.evaluate.segmentation import (
    BRATS_WORST_HD95_MM, RegionScore, cohort_segmentation_metrics, empty_mask_policy, hausdorff_distance, region_masks,
    region_metrics,
)
from vbiopsy.evaluate.survival import (
    ConcordanceEstimate, bootstrap_concordance, bootstrap_concordance_samples, concordance, fit_risk_cutoffs,
    kaplan_meier_by_group, paired_concordance_difference, risk_groups,
)

__all__ = [
    "BRATS_WORST_HD95_MM", "RegionScore", "cohort_segmentation_metrics", "empty_mask_policy", "hausdorff_distance",
    "region_masks", "region_metrics",
    "AucEstimate", "CalibrationCurve", "ConcordanceEstimate", "DecisionCurve", "Difference", "RocBand",
    "bootstrap_auc", "bootstrap_auc_samples", "bootstrap_concordance", "bootstrap_concordance_samples",
    "brier_score", "calibration_curve", "classification_metrics", "concordance", "confusion_matrix",
    "fit_risk_cutoffs", "kaplan_meier_by_group", "mcnemar_test", "metrics_from_confusion", "net_benefit",
    "paired_bootstrap_difference", "paired_concordance_difference", "predict_labels", "present_class_scores", "risk_groups", "roc_auc",
    "roc_curve_band", "stratified_bootstrap_indices", "youden_threshold",
]
