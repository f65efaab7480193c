"""Diagnose new scans with a trained Adaptive-Diagnoser run (``vbiopsy predict RUN SUBJECT...``).

Each scan goes the way a test patient went in training: Tumor-Localizer on the scan's own grid
(T1c plus the localiser's other modalities), working-grid sample, fold-ensemble probabilities (mean
over the fold models), Grad-CAM of the predicted class (mean over the fold models) pasted back onto
the scan grid. No label is read. An empty tumour prior falls back to the whole brain and the warning
is kept in the output (CSV column ``warnings``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy.atomic import ensure_writable_dir, write_with_atomic
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.errors import InputError
from vbiopsy.train.diagnosis_config import DiagnosisConfig


@dataclass(frozen=True, eq=False)
class CaseDiagnosis:
    """One scan's diagnosis: ``probabilities`` (class → fold-ensemble mean), ``gradcam`` of the predicted class
    on the scan grid (X, Y, Z, in [0, 1]), the scan ``affine`` (4×4, RAS mm), the ``localisation`` result,
    the sample ``record`` (box, localiser summary, ``warnings`` such as an empty prior),
    ``fold_probabilities`` (n_folds, n_classes): each fold model's output, whose spread the report shows, and
    the ``measurements`` the model read (:mod:`vbiopsy.localize.lesion_measurements`; empty without them)."""

    probabilities: dict[str, float]
    gradcam: np.ndarray
    affine: np.ndarray
    localisation: Any
    record: dict[str, Any]
    fold_probabilities: np.ndarray
    measurements: dict[str, float] = field(default_factory=dict)

    @property
    def predicted(self) -> str:
        """The most probable class."""
        return max(self.probabilities, key=self.probabilities.__getitem__)


def case_clinical(features: Sequence[str], values: Sequence[float] | None, warnings: list[str]) -> np.ndarray | None:
    """(k,) float32 clinical inputs for ``features`` (None without any); a missing value (NaN, or no values at
    all) is left NaN for the model to impute, and a warning naming it is appended to ``warnings``."""
    if not features:
        return None
    array = np.full(len(features), np.nan, np.float32) if values is None else np.asarray(values, np.float32)
    if array.shape != (len(features),):
        raise InputError("clinical", f"expected {len(features)} values ({', '.join(features)}), got {list(array)}")
    for name, value in zip(features, array):
        if np.isnan(value):
            warnings.append(f"{name} missing; imputed with the training patients' value")
    return array


def diagnose_case(t1c_path: str | Path, run_dir: str | Path, *,
                  images: dict[str, str | Path] | None = None, subject_id: str = "",
                  clinical: Sequence[float] | None = None) -> CaseDiagnosis:
    """Diagnose one scan with a finished run's fold ensemble.

    Args:
        t1c_path: the T1c NIfTI (skull-stripped, as the MRI-Processor writes it).
        run_dir: a finished diagnosis run folder (``vbiopsy train`` with a ``task: diagnosis`` config).
        images: other modalities the run's localiser and lesion crop need (default config: ``{"flair": path}``),
            same grid.
        subject_id: name used in messages and the record (default: the file name).
        clinical: the patient's values of the run's ``model.clinical`` variables, encoded as in
            :mod:`vbiopsy.train.tabular` (NaN = missing: imputed with the training value, with a warning).
    """
    from vbiopsy.tasks.diagnose import ensemble_probabilities, predict_probabilities
    from vbiopsy.localize.lesion_measurements import MEASUREMENTS
    from vbiopsy.train.diagnosis_data import (case_dataset, crop_images, localize_scan, measurement_settings,
                                              paste_to_scan, sample_from_localization)
    from vbiopsy.train.diagnosis_gradcam import case_gradcam
    from vbiopsy.train.diagnosis_run import load_fold_models

    config, models = load_fold_models(run_dir)
    name = subject_id or Path(t1c_path).name
    paths: dict[str, str | Path | None] = {"image": t1c_path, **(images or {})}
    image, localisation = localize_scan(paths, config.data, name)
    sample = sample_from_localization(image, localisation, config.data, subject_id=name,
                                      crop_from=crop_images(paths, config.data, image, name))
    values = case_clinical(config.model.clinical, clinical, sample.record["warnings"])
    dataset = case_dataset(sample, config, values)
    per_fold = [predict_probabilities(m, dataset) for m in models]
    prob = ensemble_probabilities(per_fold)[0]
    cam = case_gradcam(models, sample, config, int(np.argmax(prob)), values)
    settings = measurement_settings(config)  # measured once already for the dataset (memoised on the sample)
    measured = {} if settings is None else dict(zip(MEASUREMENTS, map(float, sample.measurements(
        config.model.prior, settings))))
    return CaseDiagnosis({d: float(p) for d, p in zip(DIAGNOSES, prob)}, paste_to_scan(cam, sample.record),
                         image.affine, localisation, sample.record, np.stack([f[0] for f in per_fold]), measured)


def predict_diagnosis(config: DiagnosisConfig, run_dir: Path, subjects: Sequence[str], out: Path, *,
                      cohort: Path | None = None, saliency: bool = True) -> Path:
    """Write ``predictions.csv`` (probabilities, each fold model's as ``p_<class>_fold<k>``, predicted class,
    warnings, the lesion measurements as ``lesion_<name>`` when the model reads them) and
    ``<id>_prior.nii.gz`` (the localiser's refined prior used by the attention) and, with ``saliency``,
    ``<id>_gradcam.nii.gz`` — both on each scan's grid — for ``subjects`` of ``cohort``
    (default: the run's); every subject is checked before anything is written. Returns the CSV path."""
    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.data.nifti import save_volume
    from vbiopsy.train.diagnosis_data import clinical_matrix, scan_modalities

    d = config.data
    manifest = read_cohort(cohort or d.cohort, layout=d.layout, clinical=d.clinical)
    known = set(manifest.subjects)
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise InputError(manifest.source, f"no subject {unknown[0]!r} in the cohort ({len(unknown)} unknown)")
    needed = scan_modalities(d)
    inputs = []
    for sid in subjects:
        row = manifest.row(sid)
        absent = [m for m in needed if not row.get(m)]
        if absent:
            raise InputError(f"subject {sid}", f"no {', '.join(absent)} image (the run needs {', '.join(needed)})")
        inputs.append((sid, row[d.modality], {m: row[m] for m in needed if m != d.modality}))
    clinical = clinical_matrix(manifest, list(subjects), config.model.clinical)
    results = [(sid, diagnose_case(image, run_dir, images=others, subject_id=sid,
                                   clinical=None if clinical is None else clinical[i]))
               for i, (sid, image, others) in enumerate(inputs)]
    folder = ensure_writable_dir(out)
    rows = []
    for sid, case in results:
        record = {"subject_id": sid, **{f"p_{k}": round(v, 6) for k, v in case.probabilities.items()},
                  "predicted": case.predicted, "warnings": "; ".join(case.record.get("warnings", []))}
        record |= {f"p_{name}_fold{k}": round(float(p), 6) for k, fold in enumerate(case.fold_probabilities)
                   for name, p in zip(DIAGNOSES, fold)}
        record |= {f"lesion_{name}": round(value, 4) for name, value in case.measurements.items()}
        prior = case.localisation.refined_prior.astype(np.float32)
        record["prior"] = str(save_volume(prior, case.affine, folder / f"{sid}_prior.nii.gz"))
        if saliency:
            path = save_volume(case.gradcam.astype(np.float32), case.affine, folder / f"{sid}_gradcam.nii.gz")
            record["gradcam"] = str(path)
        rows.append(record)
        for warning in case.record.get("warnings", []):
            print(f"warning: subject {sid}: {warning}")
    frame = pd.DataFrame(rows)
    return write_with_atomic(folder / "predictions.csv", lambda tmp: frame.to_csv(tmp, index=False))
