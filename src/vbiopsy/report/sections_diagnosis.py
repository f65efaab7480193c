"""Cohort-report section of an Adaptive-Diagnoser run: tumour type (glioma, PCNSL, germinoma, other).

Tables are read from ``metrics.json`` (per-fold mean ± sd, pooled out-of-fold, test); the ROC figure
from ``oof_predictions.csv`` (labels included) and, for the test set, the cohort's diagnoses; the
Grad-CAM panel is the run's own ``gradcam/gradcam.png``.
"""

from __future__ import annotations

from typing import Any

from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.report.html import Figure, figure_html, section_html, table_html
from vbiopsy.report.plots import confusion_figure
from vbiopsy.report.run_folder import JsonSource, RunFolder, diagnosis_test_labels
from vbiopsy.report.sections_common import PART_NAMES, provenance_part, roc_part, threshold_table

SUMMARY = (("accuracy", "accuracy", "all patients"), ("balanced_accuracy", "balanced accuracy", "mean recall"),
           ("precision_macro", "precision", "macro"), ("recall_macro", "recall", "macro"), ("f1_macro", "F1", "macro"),
           ("auc", "AUC", "macro one-vs-rest over classes present"))
COLUMNS = [f"p_{d}" for d in DIAGNOSES]


def summary_table(m: JsonSource) -> str:
    """Mean ± sd over folds, pooled out-of-fold and test value of each summary metric."""
    has_test = m.get("test") is not None
    rows = []
    for key, name, how in SUMMARY:
        row: list[Any] = [name, how, m.cell(f"fold_mean.{key}"), m.cell(f"fold_sd.{key}"),
                          m.cell(f"pooled_oof.{key}")]
        rows.append((*row, m.cell(f"test.{key}")) if has_test else tuple(row))
    rows.append(("patients", "", None, None, m.cell("pooled_oof.n"), *([m.cell("test.n")] if has_test else [])))
    columns = ["metric", "how averaged", "mean over folds", "sd over folds (ddof 1)", "pooled out-of-fold"]
    caption = (f"Tumour-type classification. Each of the {len(m.get('folds') or [])} folds is scored on its own "
               "out-of-fold patients; 'mean/sd over folds' summarise those scores (as the paper's tables); 'pooled' "
               "scores all out-of-fold patients at once. 'macro' = unweighted mean over classes. From metrics.json.")
    return table_html(columns + (["held-out test"] if has_test else []), rows, caption)


def per_class_table(m: JsonSource, part: str) -> str:
    """Precision / recall / F1 / support of each tumour type."""
    per_class = m.get(f"{part}.per_class") or {}
    rows = [(name, m.cell(f"{part}.per_class.{name}.precision"), m.cell(f"{part}.per_class.{name}.recall"),
             m.cell(f"{part}.per_class.{name}.f1"), m.cell(f"{part}.per_class.{name}.support")) for name in per_class]
    if not rows:
        return ""
    return table_html(("tumour type", "precision", "recall", "F1", "patients"), rows,
                      f"Per tumour type on the {PART_NAMES[part]} (argmax rule), from metrics.json.")


def confusion_part(m: JsonSource, part: str) -> str:
    """Confusion matrix figure of ``part``."""
    block = m.get(part)
    if not block or "confusion_matrix" not in block:
        return ""
    caption = (f"Diagnosis confusion matrix on the {PART_NAMES[part]}: rows are the true tumour type, columns the "
               f"predicted one (most probable class); each cell gives the count and the share of its row.")
    return figure_html(Figure(confusion_figure(block["confusion_matrix"], block["labels"], f"Diagnosis ({part})"),
                              "image/png", caption, f"diagnosis confusion matrix {part}"))


def roc_curves(run: RunFolder) -> str:
    """Macro one-vs-rest ROC of the pooled out-of-fold and test predictions (bands: bootstrap, seed 0)."""
    from vbiopsy.evaluate.auc import present_class_scores

    m = run.source
    curves = []
    oof = run.csv("oof_predictions.csv")
    parts = [("pooled_oof", oof, oof["target"].to_numpy(int) if oof is not None else None)]
    test = run.csv("test_predictions.csv")
    if test is not None and m.get("test"):
        ids, y = diagnosis_test_labels(run, list(test["subject_id"]))
        parts.append(("test", test.set_index("subject_id").loc[ids].reset_index(), y))
    for part, frame, y in parts:
        if frame is None or y is None or len(set(y.tolist())) < 2:
            continue
        labels, scores, average = present_class_scores(y, frame[COLUMNS].to_numpy(float), list(DIAGNOSES))
        auc = {"auc": m.get(f"{part}.auc"), "n": m.get(f"{part}.n"), "average": average}
        curves.append((part, labels, scores, auc, 0))
    return roc_part(curves, "ROC (tumour type)", "the tumour-type prediction; the band is computed here "
                                                 "(metrics.json stores no interval for this AUC)")


def gradcam_part(run: RunFolder) -> str:
    """The run's Grad-CAM panel (written by training), with its share of peaks inside the tumour."""
    path = run.path / "gradcam" / "gradcam.png"
    if not path.is_file():
        return ""
    share = (run.json_file("gradcam/gradcam.json") or {}).get("peak_in_tumour_share")
    extra = f" The map's peak lies in the (dilated) tumour for {share:.3f} of these patients." if share is not None else ""
    caption = ("Grad-CAM of the predicted class on out-of-fold patients (each by the fold model that did not train on "
               "it): bright = regions that raised the predicted class's score; cyan = the reference tumour outline." + extra)
    return figure_html(Figure(path.read_bytes(), "image/png", caption, "Grad-CAM panel"))


def diagnosis_section(run: RunFolder) -> str:
    """The whole section of an Adaptive-Diagnoser run."""
    m = run.source
    parts = [summary_table(m), roc_curves(run)]
    for part in ("test", "pooled_oof"):
        if m.get(part):
            parts += [confusion_part(m, part), per_class_table(m, part),
                      threshold_table(m, part, PART_NAMES[part])]
    parts += [gradcam_part(run), provenance_part(run)]
    return section_html(f"{run.title} — {run.path.name}", parts, anchor=f"run-{run.path.name}")
