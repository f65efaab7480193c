"""Cohort-report section of an ASLNet run: WHO grade, 12-month survival (binary) or Cox survival risk.

Every number in a table is read from ``metrics.json``. Curves need the per-patient predictions and
labels, which the figures read from the run's CSVs and (test set) the cohort; where a figure shows
something the evaluation did not store (Kaplan–Meier groups of the binary survival model, decision
curve of grade IV), it is computed with the same :mod:`vbiopsy.evaluate` function and the caption
says so.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vbiopsy.report.html import Figure, figure_html, paragraph, section_html, table_html
from vbiopsy.report.plots import calibration_figure, confusion_figure, decision_figure, kaplan_meier_figure
from vbiopsy.report.run_folder import JsonSource, RunFolder, aslnet_test_labels, follow_up
from vbiopsy.report.sections_common import (
    PART_NAMES, baseline_part, provenance_part, roc_part, shapley_part, threshold_table,
)

CLASS_LABELS = {"grade": ["grade II", "grade III", "grade IV"], "survival": ["alive at 12 months",
                                                                             "died within 12 months"]}
"""Display names of the classes of each classification task."""


def predictions(run: RunFolder, part: str) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(subject IDs, labels, model outputs) of ``part`` (oof or test); outputs (n,) or (n, K); ``None`` if absent."""
    from vbiopsy.train.cross_validation import output_columns

    columns = output_columns(run.config)
    if part == "oof":
        frame = run.csv("oof_predictions.csv")
        if frame is None:
            return None
        y = frame[["time", "event"]].to_numpy(float) if run.task == "survival_cox" else frame["target"].to_numpy(int)
    else:
        frame = run.csv("test_predictions.csv")
        if frame is None or "test" not in run.metrics:
            return None
        ids, y = aslnet_test_labels(run)
        frame = frame.set_index("subject_id").loc[ids].reset_index()
    values = frame[columns].to_numpy(dtype=float)
    return list(frame["subject_id"]), y, (values if run.task == "grade" else values[:, 0])


class MetricRow(NamedTuple):
    """One row of a metric × part table: the metric's display ``name``, its dotted ``key`` under each part
    of metrics.json, how it is averaged (``None`` where the table has no such column) and whether it is
    a p-value (shown with 3 significant digits)."""

    name: str
    key: str
    how: str | None = None
    p_value: bool = False


def parts_present(m: JsonSource) -> list[str]:
    """The parts of metrics.json a run has, test first (``test``, ``oof``)."""
    return [p for p in ("test", "oof") if m.get(p)]


def metric_table(m: JsonSource, parts: list[str], metrics: list[MetricRow], caption: str) -> str:
    """A table with one row per metric and one column per part, every value read from ``<part>.<key>`` of
    ``m``; a 'how averaged' column when any metric names one."""
    with_how = any(metric.how is not None for metric in metrics)
    rows = [(metric.name, *([metric.how or ""] if with_how else []),
             *[m.cell(f"{p}.{metric.key}", p_value=metric.p_value) for p in parts]) for metric in metrics]
    columns = ("metric", *(["how averaged"] if with_how else []), *[PART_NAMES[p] for p in parts])
    return table_html(columns, rows, caption)


def _classification_metrics(m: JsonSource, parts: list[str], grade: bool) -> list[MetricRow]:
    """AUC with its bootstrap interval, Brier before/after temperature scaling, ECE (binary), patients."""
    brier = "multi-class (sum over classes, 0–2)" if grade else "binary (0–1)"
    metrics = [MetricRow("AUC", "auc.auc", m.get(f"{parts[0]}.auc.average") or ""),
               MetricRow("AUC 95 % CI low", "auc.low", "bootstrap"),
               MetricRow("AUC 95 % CI high", "auc.high", "bootstrap"),
               MetricRow("Brier score", "brier", brier),
               MetricRow("Brier after temperature scaling", "calibrated.brier", brier)]
    if not grade:
        metrics.append(MetricRow("expected calibration error", "calibration.ece", "10 uniform bins"))
    return [*metrics, MetricRow("patients", "n", "")]


def _calibration_part(run: RunFolder, part: str, data: tuple[list[str], np.ndarray, np.ndarray]) -> str:
    from vbiopsy.evaluate import calibration_curve

    m = run.source
    calibrated = m.get(f"{part}.calibrated.curve")
    if run.task == "grade":
        _, y, prob = data
        raw = calibration_curve(y, prob).to_dict()
        source = "the uncalibrated curve is computed here with vbiopsy.evaluate.calibration_curve (top-label)"
    else:
        raw, source = m.get(f"{part}.calibration"), "both curves from metrics.json"
    curves = [(f"as trained (Brier {m.get(f'{part}.brier'):.3f})", raw)]
    if calibrated:
        curves.append((f"temperature-scaled (Brier {m.get(f'{part}.calibrated.brier'):.3f})", calibrated))
    target = raw.get("target", "P(class 1)") if raw else ""
    caption = (f"Calibration on the {PART_NAMES[part]}: patients are binned by predicted probability ({target}); "
               f"a well-calibrated model lies on the diagonal (of patients given 70 %, 70 % are positive). Larger "
               f"dots hold more patients. The Brier score is the mean squared error of the probabilities (lower is "
               f"better); the temperature was fitted on out-of-fold predictions only. {source}.")
    return figure_html(Figure(calibration_figure(curves, f"Calibration ({part})"), "image/png", caption,
                              f"calibration curve {part}"))


def _decision_part(run: RunFolder, part: str, data: tuple[list[str], np.ndarray, np.ndarray]) -> str:
    from vbiopsy.evaluate import net_benefit

    if run.task == "grade":
        _, y, prob = data
        curve = net_benefit((y == 2).astype(int), prob[:, 2]).to_dict()
        what = ("treating as grade IV when P(grade IV) is above the threshold; computed here with "
                "vbiopsy.evaluate.net_benefit (not stored in metrics.json)")
    else:
        curve, what = run.source.get(f"{part}.decision_curve"), "acting when P(death within 12 months) is above the threshold"
    if not curve:
        return ""
    caption = (f"Decision curve on the {PART_NAMES[part]} ({what}). Net benefit = true positives minus false "
               f"positives weighted by the odds of the threshold, per patient. The model is useful at thresholds "
               f"where its curve lies above both 'treat all' and 'treat none' (0). Prevalence "
               f"{curve['prevalence']:.3f}, n = {curve['n']}.")
    return figure_html(Figure(decision_figure(curve, f"Decision curve ({part})"), "image/png", caption,
                              f"decision curve {part}"))


def _confusion_part(run: RunFolder, part: str) -> str:
    block = run.source.get(f"{part}.at_tuned_rule")
    if not block:
        return ""
    caption = (f"Confusion matrix on the {PART_NAMES[part]} at the operating point tuned on out-of-fold predictions "
               f"({block['decision_rule']}): rows are the true class, columns the predicted one; each cell gives the "
               f"count and the share of its row (the per-class recall on the diagonal).")
    return figure_html(Figure(confusion_figure(block["confusion_matrix"], CLASS_LABELS[run.task],
                                               f"Confusion ({part})"), "image/png", caption, f"confusion matrix {part}"))


def _binary_km_part(run: RunFolder, part: str, data: tuple[list[str], np.ndarray, np.ndarray]) -> str:
    """KM curves of the groups the tuned threshold makes, with log-rank p and C-index (computed here)."""
    from vbiopsy.evaluate import concordance, kaplan_meier_by_group

    ids, _, prob = data
    threshold = run.source.get("posthoc.threshold")
    follow = follow_up(run, ids) if threshold is not None else None
    if follow is None or len(ids) < 2:
        return ""
    times, events = follow
    groups = np.where(prob >= threshold, "high risk", "low risk")
    km = kaplan_meier_by_group(times, events, groups)
    c_index = concordance(times, events, prob)
    logrank = km["logrank"]
    p_text = f"log-rank p = {logrank['p_value']:.3g}" if logrank else "one group only: no log-rank test"
    caption = (f"Kaplan–Meier survival of the {PART_NAMES[part]} split by the model: high risk = P(death within 12 "
               f"months) ≥ {threshold:.3f} (the OOF-tuned threshold). Shading: 95 % confidence band. {p_text}; "
               f"C-index of P(death) = {c_index:.3f} (0.5 = chance). Computed here from the cohort's follow-up with "
               f"vbiopsy.evaluate.survival (the binary evaluation stores no survival curves).")
    return figure_html(Figure(kaplan_meier_figure(km, f"Kaplan–Meier ({part})"), "image/png", caption,
                              f"Kaplan-Meier {part}"))


def classification_parts(run: RunFolder) -> list[str]:
    """Tables and figures of a grade or binary-survival run."""
    m = run.source
    parts = parts_present(m)
    grade = run.task == "grade"
    out = [metric_table(m, parts, _classification_metrics(m, parts, grade),
                        "Discrimination (AUC with a stratified bootstrap 95 % interval) and calibration (Brier), "
                        "from metrics.json. " + str(m.get("note") or ""))]
    out.append(baseline_part(m, "AUC"))
    from vbiopsy.evaluate.auc import present_class_scores
    from vbiopsy.train.cross_validation import output_columns

    data = {p: predictions(run, p) for p in parts}
    roc_curves = []
    for part, values in data.items():
        if values is None:
            continue
        y, scores, _ = present_class_scores(values[1], values[2], output_columns(run.config))
        roc_curves.append((part, y, scores, m.get(f"{part}.auc"), int(run.config.optim.seed)))
    out.append(roc_part(roc_curves, "ROC", "the imaging model"))
    for part, values in data.items():
        if values is None:
            continue
        out += [_calibration_part(run, part, values), _decision_part(run, part, values), _confusion_part(run, part)]
        if run.task == "survival":
            out.append(_binary_km_part(run, part, values))
    other = "at_argmax" if grade else "at_0.5"
    for part in parts:
        out.append(threshold_table(m, f"{part}.at_tuned_rule", f"{PART_NAMES[part]}, OOF-tuned rule"))
        out.append(threshold_table(m, f"{part}.{other}", f"{PART_NAMES[part]}, untuned rule"))
    return out


def cox_parts(run: RunFolder) -> list[str]:
    """C-index table and Kaplan–Meier curves by predicted risk group of a Cox survival run."""
    m = run.source
    parts = parts_present(m)
    metrics = [MetricRow("C-index (Harrell)", "c_index"),
               MetricRow("log-rank p (high vs low risk)", "kaplan_meier.logrank.p_value", p_value=True),
               MetricRow("patients", "n"), MetricRow("deaths", "events")]
    caption = ("C-index: the share of comparable patient pairs the risk score orders correctly (0.5 = chance). "
               f"Risk groups: risk above {m.get('posthoc.risk_cutoff')} (the out-of-fold median) = high risk.")
    out = [metric_table(m, parts, metrics, caption), baseline_part(m, "C-index")]
    for part in parts:
        km = m.get(f"{part}.kaplan_meier")
        if not km or not km.get("groups"):
            continue
        logrank = km.get("logrank")
        p_text = f"log-rank p = {logrank['p_value']:.3g}" if logrank else "one group only: no log-rank test"
        caption = (f"Kaplan–Meier survival of the {PART_NAMES[part]} by predicted risk group (0 = low, 1 = high). "
                   f"Shading: 95 % confidence band. {p_text}; C-index {m.get(f'{part}.c_index'):.3f}; from metrics.json.")
        out.append(figure_html(Figure(kaplan_meier_figure(km, f"Kaplan–Meier ({part})", {"0": "low risk", "1": "high risk"}),
                                      "image/png", caption, f"Kaplan-Meier {part}")))
    return out


def aslnet_section(run: RunFolder) -> str:
    """The whole section of an ASLNet run."""
    parts = cox_parts(run) if run.task == "survival_cox" else classification_parts(run)
    if not run.source.get("test"):
        parts.insert(0, paragraph("No held-out test set was evaluated: only out-of-fold figures are shown "
                                  "(optimistic: the same folds chose the epoch and the decision rule).", "notice"))
    parts += [shapley_part(run), provenance_part(run)]
    return section_html(f"{run.title} — {run.path.name}", parts, anchor=f"run-{run.path.name}")
