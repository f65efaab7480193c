"""Report parts every task shares: ROC figure with bands, threshold-metric tables, clinical baseline,
Shapley contributions, and the run's provenance (config, split sizes, software versions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vbiopsy.report.html import Figure, figure_html, paragraph, preformatted, section_html, table_html
from vbiopsy.report.plots import bar_figure, roc_figure
from vbiopsy.report.run_folder import JsonSource, RunFolder, software_versions

PART_NAMES = {"test": "held-out test set (fold ensemble)", "oof": "out-of-fold (training pool)",
              "pooled_oof": "out-of-fold (training pool, pooled)", "baseline_test": "clinical-only baseline, test set"}
"""metrics.json part → words used in captions."""

THRESHOLD_METRICS = (("accuracy", "accuracy", "all patients"), ("balanced_accuracy", "balanced accuracy",
                     "mean recall over classes present"),
                     ("precision_macro", "precision", "macro"), ("precision_weighted", "precision", "weighted"),
                     ("recall_macro", "recall (sensitivity)", "macro"), ("recall_weighted", "recall (sensitivity)",
                                                                          "weighted"),
                     ("f1_macro", "F1", "macro"), ("f1_weighted", "F1", "weighted"))
"""(key in a ``classification_metrics`` dict, name, how averaged)."""


def auc_label(part: str, auc: dict[str, Any]) -> str:
    """Legend text ``part: AUC a [low, high], n = N`` from a metrics.json AUC dict (interval where stored)."""
    interval = f" [{auc['low']:.3f}, {auc['high']:.3f}]" if auc.get("low") is not None else ""
    return f"{part}: AUC {auc['auc']:.3f}{interval}, n = {auc['n']}"


def roc_part(curves: Sequence[tuple[str, np.ndarray, np.ndarray, dict[str, Any], int]], title: str,
             what: str) -> str:
    """ROC figure of ``(part, y, scores, metrics AUC dict, bootstrap seed)`` curves with bootstrap bands.

    The band comes from :func:`vbiopsy.evaluate.roc_curve_band` with the resamples and seed the
    evaluation used, so its AUC interval is the one in ``metrics.json`` (the legend shows the JSON's;
    an AUC dict needs ``auc`` and ``n``, and ``low``/``high``/``n_resamples``/``level`` where stored).
    """
    from vbiopsy.evaluate import roc_curve_band

    drawn, notes = [], []
    for part, y, scores, auc, seed in curves:
        band = roc_curve_band(y, scores, n_resamples=int(auc.get("n_resamples", 2000)), seed=seed,
                              level=float(auc.get("level", 0.95)))
        if abs(band.auc.auc - auc["auc"]) > 1e-9:
            notes.append(f"{part}: the curve's AUC {band.auc.auc:.3f} differs from metrics.json ({auc['auc']:.3f})")
        drawn.append((auc_label(part, auc), band))
    if not drawn:
        return ""
    average = curves[0][3].get("average", "")
    caption = (f"ROC curve of {what} ({average}). Each point is a decision threshold: the fraction of positives "
               f"found (sensitivity) against the fraction of negatives wrongly flagged. The shaded band is the "
               f"pointwise 95 % bootstrap interval (patients resampled within each class); the diagonal is "
               f"guessing. AUC 1 = perfect ranking, 0.5 = chance; numbers are from metrics.json.")
    if average.startswith("macro"):
        caption += " For three or more classes the curve is the mean of the one-vs-rest curves (macro)."
    parts = [figure_html(Figure(roc_figure(drawn, title), "image/png", caption, f"ROC curve: {title}"))]
    parts += [paragraph(n, "note") for n in notes]
    return "".join(parts)


def threshold_table(metrics: JsonSource, path: str, what: str) -> str:
    """Accuracy, balanced accuracy, macro/weighted P/R/F1 of the rule at ``path`` (a classification_metrics dict)."""
    block = metrics.get(path)
    if not block:
        return ""
    rows = [(name, how, metrics.cell(f"{path}.{key}"), metrics.cell(f"{path}.n"))
            for key, name, how in THRESHOLD_METRICS]
    caption = (f"{what}: decision rule {block.get('decision_rule')}. 'macro' = unweighted mean over the classes "
               f"{', '.join(map(str, block.get('macro_over', [])))}; 'weighted' = mean weighted by each class's "
               f"number of patients ({', '.join(f'{k}: {v}' for k, v in block.get('n_per_class', {}).items())}).")
    return table_html(("metric", "how averaged", "value", "patients"), rows, caption)


def baseline_part(metrics: JsonSource, score: str) -> str:
    """Imaging model vs the clinical-only baseline on the test set: both scores and the paired difference."""
    diff = metrics.get("model_minus_baseline")
    if not diff:
        return ""
    key = "c_index" if score == "C-index" else "auc.auc"
    rows = [("imaging model", metrics.cell(f"test.{key}")),
            ("clinical-only baseline", metrics.cell(f"baseline_test.{key}")),
            ("difference (model − baseline)", metrics.cell("model_minus_baseline.difference")),
            ("95 % CI low", metrics.cell("model_minus_baseline.low")),
            ("95 % CI high", metrics.cell("model_minus_baseline.high"))]
    low = diff.get("low")
    if low is not None and low > 0:
        verdict = "The imaging model beats the clinical-only baseline (the interval lies above 0)."
    else:
        verdict = ("The interval includes 0 or lies below it: on these patients the imaging model has not been shown "
                   "to add anything over the clinical variables alone.")
    caption = (f"{score} on the same {diff.get('n')} test patients; the interval is a {diff.get('method')} "
               f"({diff.get('n_resamples')} resamples). {verdict}")
    return table_html(("model", f"{score} (test)"), rows, caption)


def shapley_part(run: RunFolder) -> str:
    """Mean Shapley shares of the input channels (and clinical variables) from ``explain/summary.json``."""
    source = run.json_source("explain/summary.json")
    if source is None or not source.get("mean_share"):
        return ""
    summary = source.data
    mean, sd = summary["mean_share"], summary.get("std_share", {})
    caption = (f"Share of each input in the prediction of the predicted class, mean ± sd over "
               f"{summary.get('n_patients')} test patients: exact Shapley values "
               f"({source.get('method.shapley')}). Channels raw/zg/zl/log are the ASL image and its "
               f"global-z, local-z and log transforms; age/sex/eor are clinical inputs. Shares sum to 1 per patient.")
    figure = Figure(bar_figure(mean, sd, "mean share of |Shapley value|", "Input contributions"), "image/png",
                    caption, "Shapley contributions")
    rows = [(name, source.cell(f"mean_share.{name}"), source.cell(f"std_share.{name}")) for name in mean]
    table = table_html(("input", "mean share", "sd"), rows, "Numbers from explain/summary.json.", "explain")
    extra = []
    if summary.get("tumour_mass_fraction_median") is not None:
        extra.append(paragraph(f"Median share of the saliency inside the (dilated) tumour: "
                               f"{summary['tumour_mass_fraction_median']:.3f}."))
    return section_html("Which inputs drive the prediction", [figure_html(figure), table, *extra], level=3)


def provenance_part(run: RunFolder) -> str:
    """Split sizes, run size and time, software versions and the resolved config of ``run``."""
    parts = []
    if run.splits is not None:
        rows = [("held-out test", len(run.splits.test), "—")]
        rows += [(f"fold {k}", len(f.train), len(f.val)) for k, f in enumerate(run.splits.folds)]
        parts.append(table_html(("partition", "patients (train)", "patients (validation)"), rows,
                                "Patient-level split (splits.json): no patient is in two partitions. The test "
                                "row counts the held-out patients; each fold trains on 'train' and is scored on "
                                "'validation' (its out-of-fold patients)."))
    info = [(k, run.info.get(k)) for k in ("task", "n_train_pool", "n_test", "seconds", "vbiopsy") if k in run.info]
    excluded = run.info.get("excluded") or {}
    info.append(("patients excluded from training labels", len(excluded)))
    parts.append(table_html(("run", "value"), info, "From run.json (seconds = wall-clock training time)."))
    parts.append(table_html(("software", "version"), list(software_versions().items()),
                            "Versions installed when this report was made (the run recorded vbiopsy "
                            f"{run.info.get('vbiopsy', '?')})."))
    parts.append(section_html("Configuration (config.yaml)", [preformatted(run.config_text)], level=4))
    return section_html("Provenance", parts, level=3)
