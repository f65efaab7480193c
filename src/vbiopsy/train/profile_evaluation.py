"""Final evaluation of an MGMT-Net run: the only place that reads the test segmentations and markers.

Segmentation: every predicted NIfTI (scan grid) against the manifest's reference (converted to
BraTS 2024 labels), per region (NETC, SNFH, ET, RC, TC, WT) with Dice, HD95, sensitivity and
specificity under the BraTS empty-mask policy of :mod:`vbiopsy.evaluate.segmentation`, with the
count of valid cases. Markers: per marker, over the patients whose label is known, AUC with a
bootstrap interval, threshold metrics at the OOF Youden threshold and at 0.5, Brier score and
McNemar against the majority-class rule. Out-of-fold (training pool) and test are reported apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy.atomic import write_text_atomic, write_with_atomic
from vbiopsy.data.labels import LabelConvention, to_brats2024
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.nifti import load_volume
from vbiopsy.data.splits import Splits
from vbiopsy.errors import InputError
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_data import marker_values

N_RESAMPLES = 2000


def _predictions(run_dir: Path, part: str) -> list[tuple[pd.DataFrame, Path]]:
    folders = sorted(run_dir.glob("fold_*/oof")) if part == "oof" else [run_dir / "test"]
    out = []
    for folder in folders:
        table = folder / "predictions.csv"
        if not table.is_file():
            raise InputError(table, "missing: the run did not finish")
        out.append((pd.read_csv(table, dtype={"subject_id": str}, keep_default_na=False), folder / "seg"))
    return out


def segmentation_part(rows: dict[str, dict[str, Any]], predictions: list[tuple[pd.DataFrame, Path]]
                      ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-case and summary segmentation metrics of predicted vs reference label maps."""
    from vbiopsy.evaluate.segmentation import cohort_segmentation_metrics

    cases = {}
    for table, seg_dir in predictions:
        for sid in table["subject_id"]:
            row = rows[sid]
            if row.get("seg") in (None, ""):
                continue
            ref = load_volume(row["seg"], dtype=np.int16, allow_empty=True)
            pred = load_volume(seg_dir / f"{sid}.nii.gz", dtype=np.uint8, allow_empty=True)
            labels = to_brats2024(ref.array, LabelConvention(row.get("seg_convention") or "brats2024"))
            cases[sid] = (pred.array, labels, ref.grid.spacing)
    if not cases:
        return pd.DataFrame(), {"n": 0}
    return cohort_segmentation_metrics(cases)


def marker_part(config: ProfileConfig, rows: dict[str, dict[str, Any]], table: pd.DataFrame,
                thresholds: dict[str, float] | None, seed: int) -> dict[str, Any]:
    """Per-marker metrics over the patients with a known label (thresholds: from OOF, or fitted here)."""
    from vbiopsy.evaluate.auc import bootstrap_auc
    from vbiopsy.evaluate.calibration import brier_score
    from vbiopsy.evaluate.classification import classification_metrics, mcnemar_test, youden_threshold

    out: dict[str, Any] = {}
    labels = np.stack([marker_values(rows[s], config.data.markers) for s in table["subject_id"]]) \
        if len(table) else np.zeros((0, len(config.data.markers)))
    for k, name in enumerate(config.data.markers):
        known = np.isfinite(labels[:, k]) if len(table) else np.zeros(0, dtype=bool)
        y = labels[known, k].astype(int)
        prob = table[f"p_{name}"].to_numpy(dtype=float)[known] if len(table) else np.zeros(0)
        entry: dict[str, Any] = {"n": int(known.sum()), "n_positive": int(y.sum()),
                                 "n_unknown": int((~known).sum())}
        if len(np.unique(y)) < 2:
            entry["reason"] = "fewer than two classes among the patients with a known label"
            out[name] = entry
            continue
        threshold = thresholds.get(name) if thresholds is not None else youden_threshold(y, prob)[0]
        entry["auc"] = bootstrap_auc(y, prob, n_resamples=N_RESAMPLES, seed=seed).to_dict()
        entry["youden_threshold"] = float(threshold) if threshold is not None else None
        if threshold is not None:
            entry["at_youden"] = classification_metrics(y, prob, threshold=threshold)
        entry["at_0.5"] = classification_metrics(y, prob, threshold=0.5)
        entry["brier"] = float(brier_score(y, prob))
        majority = np.full_like(y, int(y.mean() >= 0.5))
        pred = (prob >= (threshold if threshold is not None else 0.5)).astype(int)
        entry["mcnemar_vs_majority"] = mcnemar_test(y, pred, majority)
        out[name] = entry
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if hasattr(value, "to_dict") and not isinstance(value, pd.DataFrame):
        return _jsonable(value.to_dict())
    return value


def evaluate_profile(config: ProfileConfig, run_dir: Path) -> Path:
    """Write ``metrics.json``, ``metrics.md`` and per-case segmentation CSVs; return the JSON path."""
    manifest = read_cohort(config.data.cohort, layout=config.data.layout, clinical=config.data.clinical)
    Splits.load(run_dir / "splits.json")  # refuses a tampered split before anything is scored
    rows = {s: manifest.row(s) for s in manifest.subjects}
    metrics: dict[str, Any] = {"task": "profile", "markers": list(config.data.markers)}
    oof_parts = _predictions(run_dir, "oof")
    oof_table = pd.concat([t for t, _ in oof_parts], ignore_index=True)
    per_case, summary = segmentation_part(rows, oof_parts)
    oof_markers = marker_part(config, rows, oof_table, None, seed=0)
    metrics["oof"] = {"segmentation": summary, "markers": oof_markers}
    _save_cases(per_case, run_dir / "segmentation_oof.csv")
    if (run_dir / "test" / "predictions.csv").is_file():
        test_parts = _predictions(run_dir, "test")
        per_case, summary = segmentation_part(rows, test_parts)
        thresholds = {m: v.get("youden_threshold") for m, v in oof_markers.items()}
        metrics["test"] = {"segmentation": summary,
                           "markers": marker_part(config, rows, test_parts[0][0], thresholds, seed=1)}
        _save_cases(per_case, run_dir / "segmentation_test.csv")
    path = write_text_atomic(run_dir / "metrics.json", json.dumps(_jsonable(metrics), indent=1) + "\n")
    write_text_atomic(run_dir / "metrics.md", summary_markdown(metrics))
    return path


def _save_cases(frame: pd.DataFrame, path: Path) -> None:
    if len(frame):
        write_with_atomic(path, lambda tmp: frame.to_csv(tmp, index=True, float_format="%.6g"))


def summary_markdown(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of ``metrics``."""
    lines = ["# MGMT-Net run", ""]
    for part in ("oof", "test"):
        if part not in metrics:
            continue
        seg = metrics[part]["segmentation"]
        lines.append(f"## {'Out-of-fold (training pool)' if part == 'oof' else 'Test set (fold ensemble)'}")
        for region, values in (seg.get("regions") or {}).items():
            dice, hd = values["dice"], values["hd95_mm"]
            if dice.get("mean") is None:
                continue
            lines.append(f"- {region}: Dice mean {dice['mean']:.3f} (median {dice['median']:.3f}), HD95 median "
                         f"{hd['median']:.1f} mm — {seg['n_cases']} cases, region present in {values['n_ref_present']}, "
                         f"empty-mask rule applied to {dice['n_policy']}")
        for marker, entry in metrics[part]["markers"].items():
            auc = entry.get("auc")
            text = f"AUC {auc['auc']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]" if auc else entry.get("reason", "")
            lines.append(f"- {marker}: {text} (n = {entry['n']}, unknown {entry['n_unknown']})")
        lines.append("")
    return "\n".join(lines) + "\n"
