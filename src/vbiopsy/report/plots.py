"""Cohort-report charts (matplotlib, Agg) rendered to PNG bytes for embedding in HTML.

Each function draws exactly what it is given (curves and numbers come from :mod:`vbiopsy.evaluate`
objects or the run's ``metrics.json``); nothing here computes a metric. Axes are unitless rates or
probabilities unless the label says otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vbiopsy.errors import ConfigError, InputError

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (tight layout); the figure is closed."""
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def roc_figure(curves: Sequence[tuple[str, Any]], title: str) -> bytes:
    """ROC curves with their pointwise bootstrap bands.

    Args:
        curves: ``(legend label, RocBand)`` pairs (:func:`vbiopsy.evaluate.roc_curve_band`); the label
            carries the AUC text taken from ``metrics.json``.
    """
    if not curves:
        raise ConfigError("roc_figure needs at least one curve")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for (label, band), colour in zip(curves, PALETTE):
        fpr = np.r_[0.0, band.fpr]
        ax.fill_between(fpr, np.r_[0.0, band.low], np.r_[0.0, band.high], color=colour, alpha=0.18, linewidth=0)
        ax.plot(fpr, np.r_[0.0, band.tpr], color=colour, label=label)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 − specificity)",
           ylabel="true positive rate (sensitivity)", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


def calibration_figure(curves: Sequence[tuple[str, Mapping[str, Any]]], title: str) -> bytes:
    """Reliability diagram: ``(label, curve dict)`` pairs with ``mean_predicted``, ``observed_fraction``
    and ``count`` lists (a ``CalibrationCurve.to_dict()``); marker area grows with the bin count."""
    if not curves:
        raise ConfigError("calibration_figure needs at least one curve")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    for (label, curve), colour in zip(curves, PALETTE):
        count = np.asarray(curve["count"], dtype=float)
        ax.plot(curve["mean_predicted"], curve["observed_fraction"], "-", color=colour, label=label)
        ax.scatter(curve["mean_predicted"], curve["observed_fraction"], s=12 + 60 * count / max(count.max(), 1),
                   color=colour)
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="mean predicted probability in the bin",
           ylabel="observed fraction of positives", title=title)
    ax.legend(fontsize=7, loc="upper left")
    return png_bytes(fig)


def decision_figure(curve: Mapping[str, Any], title: str) -> bytes:
    """Net benefit of the model, treat-all and treat-none against the threshold probability (a
    ``DecisionCurve.to_dict()``); the y-axis is clipped just below zero as usual for such plots."""
    plt = pyplot()
    thresholds = np.asarray(curve["thresholds"], dtype=float)
    model = np.asarray(curve["model"], dtype=float)
    treat_all = np.asarray(curve["treat_all"], dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    ax.plot(thresholds, model, color=PALETTE[0], label="model")
    ax.plot(thresholds, treat_all, color=PALETTE[1], ls="--", label="treat all")
    ax.plot(thresholds, np.zeros_like(thresholds), color="black", ls=":", label="treat none")
    top = max(float(np.nanmax(np.r_[model, treat_all, 0.0])), 0.05)
    ax.set(xlim=(0, 1), ylim=(-0.1 * top - 0.02, 1.1 * top), xlabel="threshold probability",
           ylabel="net benefit (per patient)", title=title)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def confusion_figure(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str) -> bytes:
    """Confusion matrix (rows = true class, columns = predicted) with counts and row shares in each cell."""
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(labels):
        raise InputError("confusion matrix", f"must be square with {len(labels)} rows, got shape {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    plt = pyplot()
    side = 1.2 + 0.75 * len(labels)
    fig, ax = plt.subplots(figsize=(side + 0.8, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}\n{100 * share[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return png_bytes(fig)


def kaplan_meier_figure(km: Mapping[str, Any], title: str, group_names: Mapping[str, str] | None = None,
                        time_unit: str = "days") -> bytes:
    """Kaplan–Meier curves (step, with their CI shading) per group of a
    :func:`vbiopsy.evaluate.kaplan_meier_by_group` result (JSON form)."""
    groups = km.get("groups") or {}
    if not groups:
        raise InputError("kaplan_meier", "no groups to draw")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for (name, curve), colour in zip(groups.items(), PALETTE):
        label = (group_names or {}).get(name, name)
        ax.step(curve["timeline"], curve["survival"], where="post", color=colour,
                label=f"{label} (n = {curve['n']}, {curve['events']} events)")
        ax.fill_between(curve["timeline"], curve["ci_low"], curve["ci_high"], step="post", color=colour, alpha=0.15)
    ax.set(ylim=(0, 1.02), xlabel=f"time ({time_unit})", ylabel="survival probability", title=title)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def box_figure(values: Mapping[str, Sequence[float]], ylabel: str, title: str) -> bytes:
    """Box plots (median, quartiles, 1.5 IQR whiskers) with the individual values jittered on top."""
    if not values:
        raise ConfigError("box_figure needs at least one group")
    plt = pyplot()
    names = list(values)
    data = [np.asarray(values[n], dtype=float) for n in names]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(names), 3.6))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names)
    rng = np.random.default_rng(0)
    for i, column in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, column.size), column, s=8, color=PALETTE[0], alpha=0.7)
    ax.set(ylabel=ylabel, title=title)
    return png_bytes(fig)


def bar_figure(values: Mapping[str, float], errors: Mapping[str, float] | None, xlabel: str, title: str) -> bytes:
    """Horizontal bars (e.g. mean Shapley share per input) with optional ± error bars."""
    if not values:
        raise ConfigError("bar_figure needs at least one value")
    plt = pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(4.6, 0.8 + 0.32 * len(names)))
    err = [float((errors or {}).get(n, 0.0) or 0.0) for n in names]
    ax.barh(range(len(names)), [float(values[n]) for n in names], xerr=err if errors else None, color=PALETTE[0])
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    return png_bytes(fig)
