"""``vbiopsy predict RUN_DIR SUBJECT...`` for an MGMT-Net run: segmentation NIfTI + marker probabilities.

Each subject is read like a test patient (no label is read), segmented by the fold ensemble with
Gaussian-blended sliding windows, post-processed and written as ``<id>_seg.nii.gz`` on the scan's
own grid (BraTS 2024 labels). A subject with a missing modality is still predicted (the modality
mask tells the network which inputs are absent); a warning says which and the CSV records it.
Grad-CAM of each marker's positive class (fold-ensemble mean, on the tumour-centred patch that gave
the marker probability; :mod:`vbiopsy.explain.marker_gradcam`) is written as
``<id>_gradcam_<marker>.nii.gz`` on the same grid (CSV column ``gradcam_<marker>``) for the first
``explain.max_patients`` subjects when ``explain.enabled``; ``saliency`` overrides the config.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vbiopsy.atomic import ensure_writable_dir, write_with_atomic
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.nifti import save_volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.train.profile_config import ProfileConfig
from vbiopsy.train.profile_data import load_case
from vbiopsy.train.profile_infer import marker_gradcam, predict_case, to_native, working_to_native
from vbiopsy.train.profile_run import load_profile_ensemble

log = logging.getLogger(__name__)


def explained_subjects(config: ProfileConfig, subjects: Sequence[str], saliency: bool | None) -> list[str]:
    """Subjects that get marker Grad-CAM maps: all (``saliency=True``), none (``False``), or with ``None`` the
    first ``explain.max_patients`` when ``explain.enabled`` (a line says how many were left out)."""
    if saliency is not None and not isinstance(saliency, bool):
        raise ConfigError(f"saliency must be True, False or None (follow the config), got {saliency!r}")
    if saliency is not None:
        return list(subjects) if saliency else []
    chosen = list(subjects)[:config.explain.max_patients] if config.explain.enabled else []
    if config.explain.enabled and len(chosen) < len(subjects):
        print(f"note: marker Grad-CAM written for the first {len(chosen)} of {len(subjects)} subjects "
              "(explain.max_patients; --saliency maps them all)")
    return chosen


def predict_profile(config: ProfileConfig, run_dir: Path, subjects: Sequence[str], out: Path, *,
                    cohort: Path | None = None, report: bool = False, saliency: bool | None = None) -> Path:
    """Write segmentations, marker Grad-CAM maps (see :func:`explained_subjects`) and ``predictions.csv`` for
    ``subjects`` into ``out``; return the CSV path. With ``report``, also ``<id>_report.html`` per subject
    (:mod:`vbiopsy.report.patient_hooks`)."""
    d = config.data
    explained = set(explained_subjects(config, subjects, saliency))
    manifest = read_cohort(cohort or d.cohort, layout=d.layout, clinical=d.clinical)
    known = set(manifest.subjects)
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise InputError(manifest.source, f"no subject {unknown[0]!r} in the cohort ({len(unknown)} unknown)")
    ensemble = load_profile_ensemble(config, run_dir)
    cases = []
    for sid in subjects:  # read every input before writing anything
        row = {k: v for k, v in manifest.row(sid).items() if k not in ("seg", *d.markers)}
        cases.append(load_case(row, d.modalities, d.spacing_mm, with_seg=False, markers=d.markers))
    folder = ensure_writable_dir(out)
    rows = []
    for case in cases:
        missing = [d.modalities[i] for i in case.missing]
        if missing:
            log.warning("subject %s: no %s image; predicted from the other modalities", case.subject_id,
                        ", ".join(missing))
            print(f"warning: subject {case.subject_id} has no {', '.join(missing)}; predicted without it")
        pred = predict_case(ensemble, case, patch=config.augment.patch, settings=config.inference)
        labels = to_native(pred, case, config.inference)
        path = save_volume(labels, case.native.affine, folder / f"{case.subject_id}_seg.nii.gz", dtype=np.uint8)
        voxel_ml = float(np.prod(np.linalg.norm(case.native.affine[:3, :3], axis=0))) / 1000.0
        record = {"subject_id": case.subject_id, "segmentation": str(path),
                  **{f"p_{m}": float(p) for m, p in zip(d.markers, pred.markers)},
                  **{f"volume_ml_{name}": round(float(np.isin(labels, values).sum()) * voxel_ml, 3)
                     for name, values in (("WT", (1, 2, 3)), ("TC", (1, 3)), ("ET", (3,)))},
                  "missing_modalities": ";".join(missing)}
        record.update({f"cmaf_{m}": s for m, s in zip(d.modalities, pred.modality_share)})
        if case.subject_id in explained:
            maps = marker_gradcam(ensemble.members, case, pred, patch=config.augment.patch, markers=d.markers)
            for name, cam in maps.items():
                record[f"gradcam_{name}"] = str(save_volume(working_to_native(cam, case), case.native.affine,
                                                            folder / f"{case.subject_id}_gradcam_{name}.nii.gz"))
        if report:
            from vbiopsy.report.patient_hooks import profile_report

            images = {m: manifest.row(case.subject_id).get(m) for m in d.modalities}
            profile_report(config, run_dir, ensemble, case, pred, labels, images, record, folder)
        rows.append(record)
    frame = pd.DataFrame(rows)
    return write_with_atomic(folder / "predictions.csv",
                             lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
