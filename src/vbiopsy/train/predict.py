"""``vbiopsy predict RUN_DIR SUBJECT...``: the trained fold ensemble on patients of a cohort.

Each subject's scan is cut with the run's ROI settings, the clinical inputs (survival) are imputed
with the training pool's statistics, and the ensemble gives probabilities plus the decision of the
post-hoc rule fitted on OOF (scaled argmax for grade, Youden threshold for survival). With
``--saliency`` an IG map of the predicted class is written as NIfTI on the scan's own grid.
Labels are never read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vbiopsy.atomic import ensure_writable_dir, write_with_atomic
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.roi_cubes import extract_cube
from vbiopsy.data.splits import Splits
from vbiopsy.errors import InputError
from vbiopsy.tasks.aslnet import probabilities
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.cross_validation import calibrate, output_columns
from vbiopsy.train.ensemble import load_ensemble
from vbiopsy.train.explain_run import pool_encoding, predicted_target, saliency_volume, tabular_row

GRADE_NAMES = ("II", "III", "IV")


def decision(config: TrainConfig, output: np.ndarray, rule: dict) -> str:
    """Human-readable decision of the OOF-fitted rule."""
    if config.task == "grade":
        scaled = output * np.asarray(rule.get("class_scaling", [1.0] * len(output)))
        return f"grade {GRADE_NAMES[int(np.argmax(scaled))]}"
    if config.task == "survival":
        return "death within 12 months" if output[0] >= rule["threshold"] else "alive at 12 months"
    return "high risk" if output[0] > rule["risk_cutoff"] else "low risk"


def predict_subjects(config: TrainConfig, run_dir: Path, subjects: Sequence[str], out: Path, *,
                     cohort: Path | None = None, saliency: bool = False, report: bool = False) -> Path:
    """Write ``predictions.csv`` (and saliency maps) for ``subjects`` into ``out``; return the CSV path.
    With ``report``, also ``<id>_report.html`` per subject (:mod:`vbiopsy.report.patient_hooks`; implies saliency)."""
    manifest = read_cohort(cohort or config.data.cohort, layout=config.data.layout, clinical=config.data.clinical)
    known = set(manifest.subjects)
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise InputError(manifest.source, f"no subject {unknown[0]!r} in the cohort ({len(unknown)} unknown)")
    ensemble = load_ensemble(config, run_dir)
    encoding = pool_encoding(config, manifest, Splits.load(run_dir / "splits.json"))
    rule = json.loads((run_dir / "posthoc.json").read_text())
    roi = config.data.roi
    folder = ensure_writable_dir(out)
    rows = []
    for sid in subjects:
        row = manifest.row(sid)
        if row.get(config.data.modality) is None:
            raise InputError(manifest.source, f"subject {sid} has no {config.data.modality!r} image")
        cube = extract_cube(row[config.data.modality], side_mm=roi.side_mm, top_pct=roi.top_pct, centre=roi.centre,
                            brain_mask=row.get("brain_mask"), seg=row.get("seg"), window_mm=roi.window_mm,
                            out_shape=roi.out_shape)
        tabular = tabular_row(encoding, manifest, sid)
        image = torch.from_numpy(cube.channels())[None]
        with torch.no_grad():
            output = probabilities(config.task, ensemble(image, tabular)).numpy().reshape(-1)
        record = {"subject_id": sid, **dict(zip(output_columns(config), output.tolist()))}
        if "temperature" in rule:
            calibrated = calibrate(output[None] if config.task == "grade" else output, rule["temperature"]).reshape(-1)
            record.update({f"calibrated_{c}": float(v) for c, v in zip(output_columns(config), calibrated)})
        record |= {"decision": decision(config, output, rule), "rule": rule["rule"]}
        scan = None
        if (saliency or report) and config.task != "survival_cox":
            from vbiopsy.explain import save_saliency

            target = predicted_target(config, output if config.task == "grade" else output[0], rule.get("threshold"))
            scan = saliency_volume(ensemble, cube, image, tabular, target, config)
            record["saliency"] = str(save_saliency(scan, folder / f"{sid}_saliency.nii.gz"))
        if report:
            from vbiopsy.report.patient_hooks import aslnet_report

            aslnet_report(config, run_dir, ensemble, row, image, tabular, output, record,
                          None if scan is None else scan.array, folder)
        rows.append(record)
    frame = pd.DataFrame(rows)
    return write_with_atomic(folder / "predictions.csv",
                             lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
