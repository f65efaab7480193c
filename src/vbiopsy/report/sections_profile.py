"""Cohort-report section of an MGMT-Net run: sub-region segmentation and molecular markers.

Tables are read from ``metrics.json``; box plots from the per-case ``segmentation_{test,oof}.csv``
the evaluation wrote; marker ROC curves from the prediction CSVs and the cohort's marker labels,
with the evaluation's bootstrap seeds (out-of-fold 0, test 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vbiopsy.report.html import Figure, figure_html, paragraph, section_html, table_html
from vbiopsy.report.plots import bar_figure, box_figure
from vbiopsy.report.run_folder import JsonSource, RunFolder, marker_labels
from vbiopsy.report.sections_common import PART_NAMES, provenance_part, roc_part

SEG_METRICS = (("dice", "Dice", ""), ("hd95_mm", "HD95", "mm"), ("sensitivity", "sensitivity", ""),
               ("specificity", "specificity", ""))
"""(key, name, unit) of the per-region segmentation metrics."""
REGION_WORDS = ("NETC = non-enhancing tumour core, SNFH = surrounding FLAIR hyperintensity (oedema), ET = enhancing "
                "tumour, RC = resection cavity, TC = tumour core (NETC + ET), WT = whole tumour (NETC + SNFH + ET)")
BOOTSTRAP_SEEDS = {"oof": 0, "test": 1}
"""Seeds :func:`vbiopsy.train.profile_evaluation.evaluate_profile` gave each part's marker bootstrap."""


def segmentation_table(m: JsonSource, part: str) -> str:
    """Per-region mean / median / sd of each metric with the case counts."""
    summary = m.get(f"{part}.segmentation")
    if not summary or not summary.get("regions"):
        return ""
    rows = []
    for region in summary["regions"]:
        base = f"{part}.segmentation.regions.{region}"
        for key, name, unit in SEG_METRICS:
            rows.append((region, f"{name} ({unit})" if unit else name, m.cell(f"{base}.{key}.mean"),
                         m.cell(f"{base}.{key}.median"), m.cell(f"{base}.{key}.sd"), m.cell(f"{base}.{key}.n"),
                         m.cell(f"{base}.{key}.n_policy"), m.cell(f"{base}.n_ref_present")))
    caption = (f"Segmentation on the {PART_NAMES[part]}, per region ({REGION_WORDS}). Dice 1 = perfect overlap; HD95 "
               f"= 95th-percentile distance between the predicted and true surfaces (lower is better). Means include "
               f"the empty-mask rule where a region is absent from the prediction or the reference "
               f"({summary.get('policy')}); 'rule applied' counts those cases. From metrics.json.")
    return table_html(("region", "metric", "mean", "median", "sd", "cases", "rule applied", "region present"),
                      rows, caption)


def segmentation_boxes(run: RunFolder, part: str) -> str:
    """Box plots of per-case Dice and HD95 by region from ``segmentation_<part>.csv``."""
    frame = run.csv(f"segmentation_{part}.csv")
    if frame is None or frame.empty or "region" not in frame.columns:
        return ""
    figures = []
    for key, name, unit in SEG_METRICS[:2]:
        values = {region: group[key].dropna().to_numpy(float) for region, group in frame.groupby("region", sort=False)}
        caption = (f"{name} per patient and region on the {PART_NAMES[part]} (segmentation_{part}.csv): the box "
                   f"spans the middle half of the patients, the line is the median, dots are patients.")
        figures.append(figure_html(Figure(box_figure(values, f"{name} ({unit})" if unit else name,
                                                     f"{name} by region ({part})"), "image/png", caption,
                                          f"{name} box plot {part}")))
    return "".join(figures)


def marker_table(m: JsonSource, part: str) -> str:
    """Per-marker AUC with CI, Brier, accuracy at the Youden threshold, McNemar vs the majority rule."""
    markers = m.get(f"{part}.markers") or {}
    rows = []
    for name, entry in markers.items():
        base = f"{part}.markers.{name}"
        if "auc" not in entry:
            rows.append((name, m.cell(f"{base}.n"), m.cell(f"{base}.n_positive"), m.cell(f"{base}.n_unknown"),
                         entry.get("reason", "no AUC"), None, None, None, None, None, None))
            continue
        rows.append((name, m.cell(f"{base}.n"), m.cell(f"{base}.n_positive"), m.cell(f"{base}.n_unknown"),
                     m.cell(f"{base}.auc.auc"), m.cell(f"{base}.auc.low"), m.cell(f"{base}.auc.high"),
                     m.cell(f"{base}.brier"), m.cell(f"{base}.youden_threshold"),
                     m.cell(f"{base}.at_youden.balanced_accuracy"),
                     m.cell(f"{base}.mcnemar_vs_majority.p_value", p_value=True)))
    if not rows:
        return ""
    caption = (f"Molecular markers on the {PART_NAMES[part]} (binary AUC over the patients whose marker is known; "
               f"95 % stratified bootstrap interval). The threshold is Youden's J on out-of-fold predictions; balanced "
               f"accuracy is at that threshold; McNemar p compares it with always predicting the majority class. "
               f"From metrics.json.")
    return table_html(("marker", "patients", "positive", "unknown", "AUC", "CI low", "CI high", "Brier",
                       "threshold", "balanced accuracy", "McNemar p"), rows, caption)


def predictions_table(run: RunFolder, part: str) -> pd.DataFrame | None:
    """Marker/modality predictions of ``part`` (all out-of-fold folds concatenated, or the test ensemble)."""
    if part == "test":
        return run.csv("test/predictions.csv")
    frames = [run.csv(str(p.relative_to(run.path))) for p in sorted(run.path.glob("fold_*/oof/predictions.csv"))]
    frames = [f for f in frames if f is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def marker_roc(run: RunFolder, part: str, frame: pd.DataFrame) -> str:
    """One ROC figure per marker with an AUC in metrics.json (patients with a known label)."""
    labels = marker_labels(run, list(frame["subject_id"]))
    figures = []
    for k, name in enumerate(run.config.data.markers):
        auc = run.source.get(f"{part}.markers.{name}.auc")
        if not auc:
            continue
        known = np.isfinite(labels[:, k])
        y, prob = labels[known, k].astype(int), frame[f"p_{name}"].to_numpy(float)[known]
        figures.append(roc_part([(part, y, prob, auc, BOOTSTRAP_SEEDS[part])], f"ROC {name} ({part})",
                                f"the {name} prediction on the {PART_NAMES[part]}"))
    return "".join(figures)


def modality_weights(frame: pd.DataFrame, part: str) -> str:
    """Mean CMAF weight per modality inside the predicted tumour (computed here from the prediction CSV)."""
    columns = [c for c in frame.columns if c.startswith("cmaf_")]
    values = frame[columns].apply(pd.to_numeric, errors="coerce") if columns else None
    if values is None or values.dropna(how="all").empty:
        return ""
    mean = {c[5:]: float(values[c].mean()) for c in columns}
    sd = {c[5:]: float(values[c].std(ddof=0)) for c in columns}
    caption = (f"How much MGMT-Net's cross-modal attention fusion (CMAF) relied on each MRI sequence inside the "
               f"predicted tumour: mean ± sd over the {len(values)} patients of the {PART_NAMES[part]} (computed here "
               f"from the cmaf_* columns of the prediction CSV; weights sum to 1 per patient).")
    return figure_html(Figure(bar_figure(mean, sd, "mean attention weight", f"Modality weights ({part})"),
                              "image/png", caption, f"CMAF modality weights {part}"))


def profile_section(run: RunFolder) -> str:
    """The whole section of an MGMT-Net run."""
    m = run.source
    parts = []
    for part in ("test", "oof"):
        if not m.get(part):
            continue
        frame = predictions_table(run, part)
        body = [segmentation_table(m, part), segmentation_boxes(run, part), marker_table(m, part)]
        if frame is not None and len(frame):
            body += [marker_roc(run, part, frame), modality_weights(frame, part)]
        parts.append(section_html(PART_NAMES[part].capitalize(), body, level=3))
    if not m.get("test"):
        parts.insert(0, paragraph("No held-out test set was evaluated: only out-of-fold figures are shown.", "notice"))
    parts.append(provenance_part(run))
    return section_html(f"{run.title} — {run.path.name}", parts, anchor=f"run-{run.path.name}")
