"""Glue between ``vbiopsy predict --report`` and the patient report: per-fold outputs (the ensemble's
spread), the native-space images and overlays of each pipeline, and the files written beside it.

Called by :func:`vbiopsy.train.predict.predict_subjects` (ASLNet) and
:func:`vbiopsy.train.profile_predict.predict_profile` (MGMT-Net) once a subject is predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vbiopsy.data.schema import MODALITIES
from vbiopsy.report.patient_report import (
    HeatMap, Output, PatientFindings, load_patient_images, write_patient_report,
)

OUTPUT_NAMES = {"grade_2": ("grade II", "probability"), "grade_3": ("grade III", "probability"),
                "grade_4": ("grade IV", "probability"), "p_event": ("death within 12 months", "probability"),
                "risk": ("survival risk score", "log hazard (higher = shorter survival)")}
"""ASLNet output column → (display name, meaning)."""

MARKER_POSITIVE = {"idh": "IDH mutant", "codel_1p19q": "1p/19q co-deleted", "tert": "TERT promoter mutant"}
"""MGMT-Net marker → its positive class, the class its Grad-CAM explains."""


def _modalities(row: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(present, missing) image columns of a manifest row among the known modalities."""
    present = tuple(m for m in MODALITIES if row.get(m))
    return present, tuple(m for m in MODALITIES if m in row and not row.get(m))


def _reference_seg(row: dict[str, Any]) -> np.ndarray | None:
    """The cohort's own segmentation in BraTS 2024 labels (``None`` without one)."""
    from vbiopsy.data.labels import to_brats2024
    from vbiopsy.data.nifti import load_volume

    if not row.get("seg"):
        return None
    array = load_volume(row["seg"], dtype=np.int16, allow_empty=True).array
    return to_brats2024(array, row.get("seg_convention") or "brats2024")


@torch.no_grad()
def fold_outputs(task: str, members: Any, image: torch.Tensor, tabular: torch.Tensor | None,
                 uses_tabular: bool) -> list[np.ndarray]:
    """Each fold model's output (probabilities or risk, flattened) for one ASLNet input."""
    from vbiopsy.tasks.aslnet import probabilities

    return [probabilities(task, m(image, tabular) if uses_tabular else m(image)).numpy().reshape(-1)  # type: ignore[arg-type]
            for m in members]


def aslnet_report(config: Any, run_dir: Path, ensemble: Any, row: dict[str, Any], image: torch.Tensor,
                  tabular: torch.Tensor | None, output: np.ndarray, record: dict[str, Any],
                  saliency: np.ndarray | None, folder: Path) -> Path:
    """Write the patient report of one ASLNet prediction (``record`` is its row of predictions.csv)."""
    from vbiopsy.train.cross_validation import output_columns

    per_fold = fold_outputs(config.task, ensemble.members, image, tabular, config.uses_tabular)
    outputs = tuple(Output(OUTPUT_NAMES[c][0], float(output[k]), tuple(float(f[k]) for f in per_fold),
                           OUTPUT_NAMES[c][1]) for k, c in enumerate(output_columns(config)))
    present, missing = _modalities(row)
    seg = _reference_seg(row)
    sources = {"seg": "reference segmentation from the cohort, not predicted by ASLNet",
               "saliency": "Integrated Gradients of the fold ensemble"}
    images, notes = load_patient_images({m: row.get(m) for m in present}, config.data.modality, seg=seg,
                                        saliency=saliency, sources=sources)
    notes.append(f"ASLNet reads only the {config.data.modality} image (and age, sex, extent of resection for "
                 "survival); the other sequences are shown for orientation.")
    if "calibrated_" + output_columns(config)[0] in record:
        notes.append("Temperature-calibrated probabilities are in predictions.csv (calibrated_* columns).")
    findings = PatientFindings(str(record["subject_id"]), f"ASLNet ({config.task})", str(run_dir), outputs,
                               str(record["decision"]), str(record["rule"]), present, missing, tuple(notes))
    files = [Path(record["saliency"]).name] if record.get("saliency") else []
    return write_patient_report(findings, images, folder, files + ["predictions.csv"])


def marker_heat_maps(markers: Sequence[str], record: Mapping[str, Any]) -> list[HeatMap]:
    """The Grad-CAM of each marker's positive class that ``record`` names (column ``gradcam_<marker>``, a NIfTI
    on the patient's grid), named and captioned after that class, in the order of ``markers``."""
    from vbiopsy.data.nifti import load_volume

    maps = []
    for marker in markers:
        path = record.get(f"gradcam_{marker}")
        if not path:
            continue
        positive = MARKER_POSITIVE.get(marker, f"{marker} positive")
        caption = (f"Grad-CAM of {marker} positive, i.e. {positive}, on the marker patch and zero outside it, "
                   f"fold-ensemble mean: bright = where the evidence for {positive} is strongest, whatever its "
                   "predicted probability")
        maps.append(HeatMap(positive, load_volume(path, allow_empty=True).array, caption))
    return maps


def profile_report(config: Any, run_dir: Path, ensemble: Any, case: Any, prediction: Any, labels: np.ndarray,
                   row: dict[str, Any], record: dict[str, Any], folder: Path) -> Path:
    """Write the patient report of one MGMT-Net prediction: markers with fold spread, predicted segmentation and
    the Grad-CAM of each marker's positive class that ``record`` names (one heat map each)."""
    from vbiopsy.train.profile_infer import marker_probabilities, tumour_centre

    centre = prediction.centre or tumour_centre(prediction.labels, 1.0 - prediction.probabilities[0],
                                                (case.image != 0).any(axis=0))
    with torch.no_grad():
        per_fold = [marker_probabilities(m, case.image, case.present, centre, config.augment.patch,
                                         prediction.labels)[0] for m in ensemble.members]
    markers = config.data.markers
    outputs = tuple(Output(f"{name} positive", float(prediction.markers[k]),
                           tuple(float(f[k]) for f in per_fold)) for k, name in enumerate(markers))
    present = tuple(m for m in config.data.modalities if row.get(m))
    missing = tuple(m for m in config.data.modalities if not row.get(m))
    heat_maps = marker_heat_maps(markers, record)
    images, notes = load_patient_images({m: row.get(m) for m in present}, present[0], seg=labels,
                                        sources={"seg": "predicted by MGMT-Net, fold ensemble"}, heat_maps=heat_maps)
    if heat_maps:
        notes.append("Each heat map explains its marker's positive class whatever the predicted probability: for a "
                     "marker predicted negative it shows where the weaker evidence for positive lies. Full-resolution "
                     "maps are in the gradcam_*.nii.gz files.")
    volumes = ", ".join(f"{k[10:]} {record[k]:.1f} ml" for k in record if k.startswith("volume_ml_"))
    notes.append(f"Predicted tumour volumes: {volumes} (WT = whole tumour, TC = tumour core, ET = enhancing).")
    shares = {k[5:]: v for k, v in record.items() if k.startswith("cmaf_")}
    if shares:
        notes.append("CMAF modality weights inside the predicted tumour: "
                     + ", ".join(f"{k} {float(v):.2f}" for k, v in shares.items()) + ".")
    decision = "; ".join(f"{o.name.split()[0]} {o.value:.2f}" for o in outputs)
    findings = PatientFindings(case.subject_id, "MGMT-Net (segmentation + markers)", str(run_dir), outputs,
                               f"marker probabilities {decision}",
                               "probabilities as predicted; the evaluation's Youden thresholds are in metrics.json",
                               present, missing, tuple(notes))
    with_map = [m for m in markers if record.get(f"gradcam_{m}")]
    files = [Path(str(f)).name for f in (record["segmentation"], *(record[f"gradcam_{m}"] for m in with_map))]
    return write_patient_report(findings, images, folder, files + ["predictions.csv"])


def diagnosis_reports(config: Any, run_dir: Path, predictions: Path, cohort: Path | None) -> list[Path]:
    """Patient reports of an Adaptive-Diagnoser ``predictions.csv`` (probabilities, Grad-CAM NIfTI beside it).

    Fold spread from the ``p_<class>_fold<k>`` columns, the localiser prior from ``<id>_prior.nii.gz``, the
    lesion measurements (a note) from the ``lesion_<name>`` columns.
    """
    import pandas as pd

    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.data.nifti import load_volume
    from vbiopsy.data.schema import DIAGNOSES
    from vbiopsy.localize.lesion_measurements import describe_measurements

    d = config.data
    manifest = read_cohort(cohort or d.cohort, layout=d.layout, clinical=d.clinical)
    frame = pd.read_csv(predictions, dtype={"subject_id": str}, keep_default_na=False)
    written = []
    for record in frame.to_dict("records"):
        row = manifest.row(str(record["subject_id"]))
        present, missing = _modalities(row)
        gradcam = record.get("gradcam")
        saliency = load_volume(gradcam, allow_empty=True).array if gradcam else None
        prior_path = record.get("prior")
        prior = load_volume(prior_path, allow_empty=True).array if prior_path else None
        images, notes = load_patient_images({m: row.get(m) for m in present}, d.modality, saliency=saliency,
                                            prior=prior,
                                            sources={"saliency": "Grad-CAM of the predicted class, fold-ensemble mean",
                                                     "prior": "Tumor-Localizer refined prior (input to the attention)"})
        if record.get("warnings"):
            notes.append(f"Warnings: {record['warnings']}")
        measured = {k[len("lesion_"):]: float(v) for k, v in record.items() if k.startswith("lesion_") and v != ""}
        if measured:
            notes.append(f"Lesion measurements read by the model (tumour-centred crop): "
                         f"{describe_measurements(measured)}")
        folds = sorted({int(k.rsplit("_fold", 1)[1]) for k in record if "_fold" in k})
        outputs = tuple(Output(name, float(record[f"p_{name}"]),
                               tuple(float(record[f"p_{name}_fold{k}"]) for k in folds)) for name in DIAGNOSES)
        findings = PatientFindings(str(record["subject_id"]), "Adaptive-Diagnoser (tumour type)", str(run_dir),
                                   outputs, f"most probable tumour type: {record['predicted']}", "argmax",
                                   present, missing, tuple(notes))
        files = [Path(f).name for f in (gradcam, prior_path) if f]
        written.append(write_patient_report(findings, images, predictions.parent, files + ["predictions.csv"]))
    return written
